//! `h5pay-worker demo`: the sandbox gateway, a worker and the notify
//! receiver in one process, against the local RabbitMQ and Redis, fed a
//! handful of intents that cover every outcome; some orders are then paid on
//! the sandbox (by hand, or by themselves), and the gateway's notifies turn
//! into payment events. Prints one row per intent with its result and its
//! payment event, and exits non-zero if any row is not what the contract
//! says it should be.
//!
//! It uses names of its own (`h5pay-demo-<run>.*` on the broker,
//! `h5pay-demo:<run>` in Redis) and removes them afterwards, so it never
//! touches a real worker's queues or claims.
//!
//! One module per stage: `services` starts and stops what the demo runs
//! against, `cases` lists the intents, `orders` places them, `pay`
//! pays some, `events` follows the payment events and `table` shows
//! the outcome.

mod cases;
mod events;
mod orders;
mod pay;
mod services;
mod table;

use std::collections::HashMap;
use std::io::Write;

use crate::amqp;
use crate::cli::publish::intent_channel;
use crate::config::Config;
use services::Services;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the sandbox: {0}")]
    Sandbox(std::io::Error),
    #[error("cannot connect to RabbitMQ at {url}: {source} (is it running? `make services`)")]
    Amqp { url: String, source: lapin::Error },
    #[error("AMQP: {0}")]
    Channel(#[from] lapin::Error),
    #[error("worker: {0}")]
    Worker(#[from] crate::worker::WorkerError),
    #[error(transparent)]
    Topology(#[from] amqp::TopologyError),
    #[error("Redis at {url} does not answer: {source} (is it running? `make services`)")]
    Redis {
        url: String,
        source: redis::RedisError,
    },
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

pub async fn run(mut config: Config, out: &mut (dyn Write + Send)) -> Result<bool, DemoError> {
    let run_id = crate::claim::new_token()[..8].to_owned();
    services::isolate(&mut config.settings, &run_id);
    let mut services = Services::start(config).await?;
    writeln!(
        out,
        "h5pay-worker demo: sandbox gateway on http://{}, worker consuming h5pay-demo-{run_id}.intents, \
         notify receiver on http://{}\n",
        services.sandbox_addr, services.notify_addr
    )?;
    let first_wave = cases::first_wave(&run_id);
    let second_wave = cases::second_wave(&run_id);

    // What the payment side must show: paid by hand, paid by itself, an
    // anomaly; the rest have no payment event (open, or not followed).
    let to_pay: Vec<String> = first_wave
        .iter()
        .filter(|c| c.pay_by_hand)
        .map(|c| c.trace.clone())
        .collect();
    let expected_payments: HashMap<String, &'static str> = first_wave
        .iter()
        .filter_map(|c| c.payment.map(|p| (c.trace.clone(), p)))
        .collect();

    let ch = intent_channel(&services.conn).await?;
    let mut first_event_ids = HashMap::new();
    let (mut rows, mut ok) =
        orders::first_wave(&mut services, &ch, &first_wave, &mut first_event_ids).await?;
    ok &= pay::pay_by_hand(services.sandbox_addr, &to_pay).await;
    let (replays, replays_ok) =
        orders::second_wave(&mut services, &ch, &second_wave, &first_event_ids).await?;
    rows.extend(replays);
    ok &= replays_ok;
    let seen = events::payment_events(&mut services.payments, &expected_payments).await;

    ok &= table::print(out, &rows, &seen, &expected_payments)?;
    let stats = table::sandbox_calls(&services.sandbox_addr).await;
    writeln!(
        out,
        "\ngateway calls made (from GET /sandbox/stats): {stats}"
    )?;
    writeln!(
        out,
        "{}",
        if ok {
            "every intent ended as the contract says."
        } else {
            "SOME INTENTS DID NOT END AS EXPECTED."
        }
    )?;
    services.stop(ch).await;
    Ok(ok)
}
