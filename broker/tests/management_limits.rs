//! The management listener's limits: connections that send nothing, half a request
//! head or half a body are closed after the request and idle timeouts; beyond the
//! connection cap new ones are closed at once; and however many management sockets a
//! client opens, the AMQP listener keeps accepting (even under a 512-descriptor limit).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use broker::ManagementLimits;
use common::http::{GUEST, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Reads (and drops) what the server sends until it closes the connection: how long
/// that took, or an error if it is still open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("still open after {within:?}"))?;
    Ok(start.elapsed())
}

/// `n` connections to `at`, each sent `sent`.
async fn connections(at: SocketAddr, n: usize, sent: &[u8]) -> anyhow::Result<Vec<TcpStream>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(at).await?;
        s.write_all(sent).await?;
        out.push(s);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_connections_are_closed_after_the_timeouts() -> anyhow::Result<()> {
    let limits = ManagementLimits {
        request_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(1500),
        ..ManagementLimits::default()
    };
    let (b, base) =
        common::http::start_with_api(broker::Broker::builder().management_limits(limits)).await?;
    let at = b
        .management_addr()
        .ok_or_else(|| anyhow::anyhow!("no API"))?;
    let silent = connections(at, 20, b"").await?;
    let half_head = connections(at, 20, b"GET /api/overview HTTP/1.1\r\nHost: x\r\n").await?;
    // A whole head (authenticated, so the handler waits for the body), half a body.
    let head = "PUT /api/vhosts/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
                Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    let mut half_body = connections(at, 1, head.as_bytes()).await?;
    for mut s in silent.into_iter().chain(half_head) {
        let took = closed_within(&mut s, Duration::from_secs(5)).await?;
        assert!(took < Duration::from_secs(5));
    }
    let took = closed_within(&mut half_body[0], Duration::from_secs(10)).await?;
    assert!(
        took >= Duration::from_millis(1000),
        "closed after {took:?}, before the idle timeout"
    );
    // A whole request is still answered, and the half-sent one made nothing.
    let (status, body) = http("GET", format!("{base}/api/vhosts"), GUEST, None).await?;
    assert_eq!(status, 200);
    assert!(!body.contains("slow"), "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_cap_connections_are_closed_and_amqp_still_accepts() -> anyhow::Result<()> {
    let limits = ManagementLimits {
        max_connections: 8,
        request_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
    };
    let (b, base) =
        common::http::start_with_api(broker::Broker::builder().management_limits(limits)).await?;
    let at = b
        .management_addr()
        .ok_or_else(|| anyhow::anyhow!("no API"))?;
    let mut held = connections(at, 8, b"").await?;
    let mut ninth = TcpStream::connect(at).await?;
    closed_within(&mut ninth, Duration::from_secs(5)).await?;
    let (status, _) = http("GET", format!("{base}/api/overview"), GUEST, None)
        .await
        .unwrap_or((0, String::new()));
    assert_eq!(status, 0, "served beyond the cap");
    // The AMQP listener is not held up by the full management port.
    let mut amqp = common::open(b.local_addr(), 0).await?;
    amqp.write_all(&common::close_frame()).await?;
    // A connection that closes frees its place.
    held.pop();
    common::poll::until(
        Duration::from_secs(5),
        "the API to serve again after a place was freed",
        || async {
            match http("GET", format!("{base}/api/overview"), GUEST, None).await {
                Ok((200, _)) => Some(()),
                _ => None,
            }
        },
    )
    .await?;
    Ok(())
}

#[test]
fn amqp_accepts_with_700_management_sockets_open_under_a_512_descriptor_limit() -> anyhow::Result<()>
{
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mgmt = format!("127.0.0.1:{port}");
    let broker = common::process::BrokerProcess::start_with_fd_limit(
        512,
        [
            "--listen",
            "127.0.0.1:0",
            "--management-listen",
            mgmt.as_str(),
        ],
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let at: SocketAddr = mgmt.parse()?;
        let mut held = Vec::new();
        for _ in 0..700 {
            // Beyond the cap the broker closes them; connecting is what counts. A
            // broker that stops accepting fills its backlog, and connecting then
            // waits for SYN retries: give up on such a one after a second.
            let connect = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(at));
            if let Ok(Ok(s)) = connect.await {
                held.push(s);
            }
        }
        let mut amqp = common::open(broker.addr, 0)
            .await
            .map_err(|e| anyhow::anyhow!("AMQP login with the management port full: {e}"))?;
        amqp.write_all(&common::close_frame()).await?;
        drop(held);
        anyhow::Ok(())
    })
}
