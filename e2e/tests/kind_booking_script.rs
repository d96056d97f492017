//! The kind walkthrough's last step, `e2e/kind/book.sh`, books through `meridian dev` as it
//! books through the Gateway of a kind cluster: same API, same development tokens.

use std::process::Command;
use std::time::Duration;

use meridian_e2e::Dev;

#[test]
fn the_kind_walkthroughs_booking_script_books_in_germany() {
    let work = tempfile::tempdir().unwrap();
    let mut dev = Dev::start_examples(work.path());
    dev.await_ready("de", Duration::from_secs(120));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kind/book.sh");
    let api = format!("http://{}", dev.addr);
    let out = Command::new("bash")
        .arg(&script)
        .arg(&api)
        .arg(format!("{api}/auth/token"))
        .output()
        .unwrap_or_else(|e| panic!("bash {}: {e}", script.display()));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "book.sh failed (it needs curl and python3):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("done: appointment "), "{stdout}");
    assert!(
        stdout.contains("\"status\":\"booked\"") || stdout.contains("booked: {"),
        "{stdout}"
    );
}
