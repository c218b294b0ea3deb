//! Does `tokio-cron-scheduler` fire a job with a named time zone at the right instants across
//! a daylight-saving change? Run under libfaketime so that days pass in seconds (see run.sh).
//!
//! The job is `0 0 2 * * *` in Europe/London (02:00 every day, local time), created on
//! 2026-03-27 (GMT, UTC+0). London moves to BST (UTC+1) at 01:00 UTC on 2026-03-29, so the
//! right fire instants are 2026-03-28T02:00Z, 2026-03-29T01:00Z and 2026-03-30T01:00Z.
//! Prints each fire and a verdict; exit code 0 when every fire is right.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio_cron_scheduler::{Job, JobScheduler};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let expected = ["2026-03-28T02:00:00Z", "2026-03-29T01:00:00Z", "2026-03-30T01:00:00Z"];
    let fires: Arc<Mutex<Vec<DateTime<Utc>>>> = Arc::default();
    let seen = fires.clone();
    println!("clock at start: {}", Utc::now());
    let scheduler = JobScheduler::new().await?;
    scheduler
        .add(Job::new_tz("0 0 2 * * *", chrono_tz::Europe::London, move |_, _| {
            let now = Utc::now();
            println!(
                "fired at {now} = {} London",
                now.with_timezone(&chrono_tz::Europe::London)
            );
            seen.lock().unwrap().push(now);
        })?)
        .await?;
    scheduler.start().await?;
    // Sleep (faked time) until after the last expected fire.
    while Utc::now() < "2026-03-30T03:00:00Z".parse::<DateTime<Utc>>()? {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
    let fires = fires.lock().unwrap().clone();
    let mut right = fires.len() == expected.len();
    for (i, want) in expected.iter().enumerate() {
        let want: DateTime<Utc> = want.parse()?;
        let got = fires.get(i);
        // The faked clock runs fast, so allow a minute of lateness.
        let ok = got.is_some_and(|g| *g >= want && (*g - want).num_seconds() < 60);
        right &= ok;
        println!(
            "expected {want}  got {}  {}",
            got.map_or("nothing".to_string(), |g| g.to_string()),
            if ok { "right" } else { "WRONG" }
        );
    }
    println!("verdict: {}", if right { "right" } else { "WRONG" });
    std::process::exit(if right { 0 } else { 1 });
}
