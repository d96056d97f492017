//! `OperationOutcome`: every refusal the service gives, with the HTTP status it goes with.

use http::StatusCode;
use serde_json::{Value, json};

/// `OperationOutcome.issue.code` values the service uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueType {
    Invalid,
    Structure,
    Required,
    Value,
    BusinessRule,
    Conflict,
    NotFound,
    Deleted,
    Forbidden,
    Login,
    NotSupported,
    TooCostly,
    Duplicate,
    Transient,
    Exception,
    Processing,
    Throttled,
    Timeout,
    Incomplete,
}

impl IssueType {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueType::Invalid => "invalid",
            IssueType::Structure => "structure",
            IssueType::Required => "required",
            IssueType::Value => "value",
            IssueType::BusinessRule => "business-rule",
            IssueType::Conflict => "conflict",
            IssueType::NotFound => "not-found",
            IssueType::Deleted => "deleted",
            IssueType::Forbidden => "forbidden",
            IssueType::Login => "login",
            IssueType::NotSupported => "not-supported",
            IssueType::TooCostly => "too-costly",
            IssueType::Duplicate => "duplicate",
            IssueType::Transient => "transient",
            IssueType::Exception => "exception",
            IssueType::Processing => "processing",
            IssueType::Throttled => "throttled",
            IssueType::Timeout => "timeout",
            IssueType::Incomplete => "incomplete",
        }
    }
}

/// One refusal: what kind, why (for people), where (a FHIRPath expression), and the HTTP
/// status it answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub status: StatusCode,
    pub code: IssueType,
    pub diagnostics: String,
    pub expression: Option<String>,
}

impl Issue {
    pub fn new(status: StatusCode, code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self {
            status,
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    /// A resource that breaks a rule: 400 for structure, 422 for content (as FHIR's HTTP
    /// page says: the resource could be read but not accepted).
    pub fn invalid(code: IssueType, diagnostics: impl Into<String>, expression: Option<String>) -> Self {
        let status = match code {
            IssueType::Structure | IssueType::NotSupported => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self {
            status,
            code,
            diagnostics: diagnostics.into(),
            expression,
        }
    }

    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression = Some(expression.into());
        self
    }

    /// The same issue, its expression under `prefix` (a transaction's entry).
    pub fn within(mut self, prefix: &str) -> Self {
        self.expression = Some(match self.expression {
            Some(e) => format!("{prefix}.{e}"),
            None => prefix.to_string(),
        });
        self
    }

    pub fn bad_request(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, IssueType::Invalid, diagnostics)
    }

    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, IssueType::NotFound, diagnostics)
    }

    pub fn forbidden(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, IssueType::Forbidden, diagnostics)
    }

    /// The database (or another store) failed: the cause goes to the log under the
    /// correlation ID, never to the caller.
    pub fn unavailable(correlation_id: uuid::Uuid) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            IssueType::Transient,
            format!("the records store is out of reach; try again shortly (correlation ID {correlation_id})"),
        )
    }

    /// The `OperationOutcome` resource.
    pub fn outcome(&self) -> Value {
        let severity = if self.status.is_server_error() {
            "fatal"
        } else {
            "error"
        };
        let mut issue = json!({
            "severity": severity,
            "code": self.code.as_str(),
            "diagnostics": self.diagnostics,
        });
        if let Some(expression) = &self.expression {
            issue["expression"] = json!([expression]);
        }
        json!({"resourceType": "OperationOutcome", "issue": [issue]})
    }
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.expression {
            Some(e) => write!(f, "{} ({e})", self.diagnostics),
            None => f.write_str(&self.diagnostics),
        }
    }
}
