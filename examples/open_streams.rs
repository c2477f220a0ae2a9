//! Opens many concurrent gRPC streams (`grpc.health.v1.Health/Watch`, which the server
//! keeps open) against a running `stint serve`, holds them, and reports when all are
//! open: for measuring the server's memory with that many streams.
//!
//! ```text
//! cargo run --release --example open_streams -- http://127.0.0.1:7420 10000 20 60
//! #                                             endpoint           streams conns hold-seconds
//! ```

use std::time::{Duration, Instant};

use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:7420".into());
    let streams: usize = args.next().map_or(Ok(10_000), |s| s.parse())?;
    let connections: usize = args.next().map_or(Ok(20), |s| s.parse())?;
    let hold: u64 = args.next().map_or(Ok(60), |s| s.parse())?;
    let started = Instant::now();
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        channels.push(Channel::from_shared(endpoint.clone())?.connect().await?);
    }
    let mut open = Vec::with_capacity(streams);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..streams {
        let channel = channels[i % channels.len()].clone();
        tasks.spawn(async move {
            let mut stream = HealthClient::new(channel)
                .watch(HealthCheckRequest::default())
                .await?
                .into_inner();
            // The first status arrives at once; then the stream stays open.
            let _ = stream.next().await;
            Ok::<_, tonic::Status>(stream)
        });
    }
    let mut failed = 0;
    while let Some(result) = tasks.join_next().await {
        match result? {
            Ok(stream) => open.push(stream),
            Err(_) => failed += 1,
        }
    }
    println!(
        "{} streams open over {} connections in {:.1} s ({failed} failed); holding {hold} s",
        open.len(),
        channels.len(),
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(hold)).await;
    Ok(())
}
