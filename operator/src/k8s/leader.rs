//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does
//! it, so two replicas never reconcile at once:
//!
//! - lease duration 15 s, renew deadline 10 s, retry period 2 s;
//! - a standby judges expiry on its own monotonic clock: a Lease is expired when its record
//!   has not changed for the lease duration since this replica first saw it (never from
//!   the `renewTime` another machine's clock wrote);
//! - a leader that cannot renew within the renew deadline, counted from the start of its
//!   last successful renewal, stops: its [`Fence`] closes at that instant, so no fenced
//!   future (the controllers, each reconcile) is polled any more, and [`LeaderElection::lead`]
//!   returns only once every one of them has been dropped. The deadline (10 s) comes before
//!   any standby can see the Lease expire (15 s after it saw the last renewal, which was
//!   written after the leader started it);
//! - writes carry the resourceVersion that was read: of two replicas racing for the Lease,
//!   the API server lets exactly one through.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease as LeaseObject, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a leader's claim holds without renewal, as written into the Lease.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long a leader keeps acting after the start of its last successful renewal.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader renews, and a standby tries to acquire.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// The Lease both the CLI (`--lease-name`) and the Helm chart use.
pub const DEFAULT_LEASE_NAME: &str = "meridian-operator";

/// One replica's view of the Lease.
pub struct LeaderElection {
    api: Api<LeaseObject>,
    name: String,
    identity: String,
    /// The Lease's record as last seen, and when it was first seen like that.
    observed: Option<(LeaseSpec, Instant)>,
    /// `meridian_leader`: 1 from acquiring the Lease until the fence closes.
    gauge: Option<prometheus_client::metrics::gauge::Gauge>,
}

impl LeaderElection {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            observed: None,
            gauge: None,
        }
    }

    /// Says in `gauge` whether this replica leads (`meridian_leader`).
    pub fn with_gauge(mut self, gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        self.gauge = Some(gauge);
        self
    }

    fn leading(&self, leading: bool) {
        if let Some(gauge) = &self.gauge {
            gauge.set(i64::from(leading));
        }
    }

    /// Waits for leadership, runs `work(fence)` while it lasts, and returns when `work`
    /// ends or `shutdown` resolves (`Ok`, the Lease released for a standby), or when the
    /// Lease could not be renewed in time or another replica holds it (`Err`, why). By
    /// then `work` has been dropped, and with it every future it fenced.
    pub async fn lead<F>(
        &mut self,
        work: impl FnOnce(Fence) -> F,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), String>
    where
        F: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        let fence = tokio::select! {
            fence = self.acquire() => fence,
            () = &mut shutdown => return Ok(()),
        };
        tracing::info!(identity = %self.identity, lease = %self.name, "leading");
        self.leading(true);
        let work = fence.guard(work(fence.clone()));
        let result = tokio::select! {
            // Leadership first: once the deadline has passed nothing else is polled.
            biased;
            lost = self.hold(&fence) => {
                fence.revoke();
                Err(lost)
            }
            () = &mut shutdown => {
                fence.revoke();
                Ok(())
            }
            () = work => {
                fence.revoke();
                Ok(())
            }
        };
        // The fence is closed: this replica acts no more.
        self.leading(false);
        // `work` is dropped: spawned reconciles are being aborted; wait until each is gone.
        fence.drained().await;
        if let Err(lost) = &result {
            tracing::warn!(identity = %self.identity, "stopped leading: {lost}");
        }
        self.release().await;
        result
    }

    /// Waits until this replica holds the Lease; the fence is open until the renew deadline.
    pub async fn acquire(&mut self) -> Fence {
        loop {
            let started = Instant::now();
            match tokio::time::timeout(RENEW_DEADLINE, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => return Fence::new(started + RENEW_DEADLINE),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election: cannot read or write the Lease"),
                Err(_) => tracing::warn!("leader election: the Lease request timed out"),
            }
            tokio::time::sleep_until(started + RETRY_PERIOD).await;
        }
    }

    /// Renews every retry period, each success moving the fence's deadline to the start of
    /// that renewal plus the renew deadline; returns why leadership ended, at the deadline
    /// at the latest (an unanswered request is abandoned then).
    async fn hold(&mut self, fence: &Fence) -> String {
        let mut last_attempt = fence
            .deadline()
            .checked_sub(RENEW_DEADLINE)
            .unwrap_or_else(Instant::now);
        loop {
            let deadline = fence.deadline();
            tokio::time::sleep_until((last_attempt + RETRY_PERIOD).min(deadline)).await;
            if Instant::now() >= deadline {
                return format!("could not renew the Lease within {}s", RENEW_DEADLINE.as_secs());
            }
            let started = Instant::now();
            last_attempt = started;
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => fence.extend(started + RENEW_DEADLINE),
                Ok(Ok(false)) => return "another replica holds the Lease".into(),
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election: renewal failed, retrying"),
                Err(_) => {
                    return format!(
                        "could not renew the Lease within {}s (the last renewal was not answered)",
                        RENEW_DEADLINE.as_secs()
                    );
                }
            }
        }
    }

    /// One round: take a free or expired Lease, renew our own; `false` when another holds it.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let spec = self.claim(None, 0);
            let lease = LeaseObject {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(spec.clone()),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(created.spec.unwrap_or(spec));
                    Ok(true)
                }
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let seen_since = self.observe(spec.clone());
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let ours = holder == Some(self.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .map_or(LEASE_DURATION, |s| Duration::from_secs(s.max(0) as u64));
        let expired = seen_since + duration <= Instant::now();
        if holder.is_some() && !ours && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours { spec.acquire_time.clone() } else { None };
        let claim = self.claim(acquired, transitions);
        lease.spec = Some(claim.clone());
        // `replace` carries the resourceVersion we read: a concurrent writer makes it fail.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(replaced) => {
                self.observe(replaced.spec.unwrap_or(claim));
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records the Lease's record; returns since when (this replica's clock) it has been
    /// unchanged.
    fn observe(&mut self, spec: LeaseSpec) -> Instant {
        match &self.observed {
            Some((seen, since)) if *seen == spec => *since,
            _ => {
                let now = Instant::now();
                self.observed = Some((spec, now));
                now
            }
        }
    }

    /// Gives the Lease up so a standby takes over at once (once this replica has stopped).
    pub async fn release(&self) {
        let release = async {
            if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
                && let Some(spec) = lease.spec.as_mut()
                && spec.holder_identity.as_deref() == Some(self.identity.as_str())
            {
                spec.holder_identity = None;
                spec.renew_time = None;
                let _ = self.api.replace(&self.name, &PostParams::default(), &lease).await;
            }
        };
        let _ = tokio::time::timeout(RETRY_PERIOD, release).await;
    }

    fn claim(&self, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        let now = Timestamp::now();
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

/// Held leadership as seen by what runs under it: open until the renew deadline (moved
/// on by each renewal) or until revoked. A future wrapped by [`Fence::guard`] is not polled
/// once the fence is closed; [`LeaderElection::lead`] waits until every such future is
/// dropped before it returns.
#[derive(Clone)]
pub struct Fence(Arc<FenceState>);

struct FenceState {
    deadline: Mutex<Instant>,
    revoked: AtomicBool,
    in_flight: AtomicUsize,
    drained: Notify,
}

impl Fence {
    fn new(deadline: Instant) -> Self {
        Self(Arc::new(FenceState {
            deadline: Mutex::new(deadline),
            revoked: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            drained: Notify::new(),
        }))
    }

    /// Whether this replica may still act: before the deadline and not revoked.
    pub fn is_leading(&self) -> bool {
        !self.0.revoked.load(Ordering::SeqCst) && Instant::now() < self.deadline()
    }

    /// Until when this replica may act, unless a renewal moves it on.
    pub fn deadline(&self) -> Instant {
        *self.0.deadline.lock().expect("fence lock")
    }

    fn extend(&self, deadline: Instant) {
        let mut current = self.0.deadline.lock().expect("fence lock");
        *current = deadline.max(*current);
    }

    fn revoke(&self) {
        self.0.revoked.store(true, Ordering::SeqCst);
    }

    /// `future`, polled only while this replica leads.
    pub fn guard<F: Future>(&self, future: F) -> Fenced<F> {
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        Fenced {
            future: Some(Box::pin(future)),
            fence: self.clone(),
        }
    }

    /// Resolves once no guarded future is left.
    async fn drained(&self) {
        loop {
            let notified = self.0.drained.notified();
            if self.0.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A future that stops being polled when its [`Fence`] closes (see [`Fence::guard`]).
pub struct Fenced<F> {
    /// `None` once dropped (see `Drop`).
    future: Option<Pin<Box<F>>>,
    fence: Fence,
}

impl<F: Future> Future for Fenced<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.fence.is_leading() {
            // Never again: whoever leads now must not see this replica act. The future is
            // dropped when the controllers are.
            return Poll::Pending;
        }
        match self.future.as_mut() {
            Some(future) => future.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl<F> Drop for Fenced<F> {
    fn drop(&mut self) {
        // The future itself first: only then is it gone for `drained`.
        drop(self.future.take());
        if self.fence.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.fence.0.drained.notify_waiters();
        }
    }
}
