//! Does `tokio-cron-scheduler` fire a job with a named time zone at the right instant across
//! a daylight-saving change? Run under libfaketime, which starts the clock at a chosen instant
//! (see run.sh).
//!
//! The job is `0 0 2 * * *` in Europe/London: 02:00 every day, local time. It is created ten
//! seconds before its fire on the day before a change; after that fire, the scheduler's next
//! tick must be 02:00 local on the day of the change, in the zone's new offset:
//!
//! - `spring`: clock starts 2026-03-28T01:59:50Z (GMT). Fire at 2026-03-28T02:00:00Z; London
//!   moves to BST on 2026-03-29, so the next tick must be 2026-03-29T01:00:00Z.
//! - `autumn`: clock starts 2026-10-24T00:59:50Z (BST). Fire at 2026-10-24T01:00:00Z; London
//!   moves back to GMT on 2026-10-25, so the next tick must be 2026-10-25T02:00:00Z.
//!
//! Prints the fire, the next tick and a verdict; exit code 0 when both are right.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_cron_scheduler::{Job, JobScheduler};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    let (fire, next): (DateTime<Utc>, DateTime<Utc>) = match scenario.as_str() {
        "spring" => ("2026-03-28T02:00:00Z".parse()?, "2026-03-29T01:00:00Z".parse()?),
        "autumn" => ("2026-10-24T01:00:00Z".parse()?, "2026-10-25T02:00:00Z".parse()?),
        _ => return Err("usage: cron_dst spring|autumn".into()),
    };
    let fires: Arc<Mutex<Vec<DateTime<Utc>>>> = Arc::default();
    let seen = fires.clone();
    println!("{scenario}: clock at start {}", Utc::now());
    let mut scheduler = JobScheduler::new().await?;
    let id = scheduler
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
    tokio::time::sleep(Duration::from_secs(15)).await;
    let fires = fires.lock().unwrap().clone();
    let next_tick = scheduler.next_tick_for_job(id).await?;
    // The fire counts as right when it is less than 2 s late (the scheduler ticks).
    let fire_right = fires.len() == 1
        && fires[0] >= fire
        && (fires[0] - fire).num_milliseconds() < 2000;
    let next_right = next_tick == Some(next);
    println!(
        "{scenario}: fire expected {fire}, got {:?}: {}",
        fires.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        if fire_right { "right" } else { "WRONG" }
    );
    println!(
        "{scenario}: next tick expected {next}, got {}: {}",
        next_tick.map_or("none".into(), |t| t.to_string()),
        if next_right { "right" } else { "WRONG" }
    );
    std::process::exit(if fire_right && next_right { 0 } else { 1 });
}
