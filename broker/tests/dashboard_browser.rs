//! The dashboard in a real browser: Debian's headless Chromium driven over the W3C
//! WebDriver protocol by `chromedriver` (a real process), against a broker in this
//! process. It logs in with the broker's user, reads a queue's ready and unacked
//! counts as AMQP clients change them, purges the queue with the page's button, sees
//! a connection close from the page, and takes a screenshot of each page.
//!
//! `#[ignore]`d: it needs `chromium` and `chromium-driver` (`.ci/run` installs them):
//!
//!     cargo test -p broker --test dashboard_browser -- --ignored
//!
//! With `DASHBOARD_SCREENSHOTS=DIR` the screenshots are written to DIR (the README's
//! come from `DASHBOARD_SCREENSHOTS=docs/dashboard`).

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Driver {
    fn start() -> anyhow::Result<Driver> {
        let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let port = free_port()?;
        let child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("{bin}: {e} (apt-get install chromium-driver)"))?;
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        wait_for(Duration::from_secs(20), "chromedriver to answer", || {
            driver
                .call("GET", "/status", None)
                .ok()
                .filter(|v| v["value"]["ready"] == json!(true))
        })?;
        Ok(driver)
    }

    /// One WebDriver command: its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.map(|b| b.to_string()).unwrap_or_default())?;
        let mut resp = agent.run(req)?;
        let status = resp.status().as_u16();
        let v: Value = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
        anyhow::ensure!(status == 200, "{method} {path}: {status} {v}");
        Ok(v)
    }
}

/// A browser session.
struct Browser<'a> {
    driver: &'a Driver,
    session: String,
}

impl<'a> Browser<'a> {
    fn open(driver: &'a Driver) -> anyhow::Result<Browser<'a>> {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,860"],
            },
        }}});
        let v = driver.call("POST", "/session", Some(caps))?;
        let session = v["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no session: {v}"))?
            .to_owned();
        Ok(Browser { driver, session })
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let v = self
            .driver
            .call(method, &format!("/session/{}{path}", self.session), body)?;
        Ok(v["value"].clone())
    }

    fn go(&self, url: &str) -> anyhow::Result<()> {
        self.cmd("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    /// Runs `script` in the page (`arguments` are `args`); its result.
    fn js(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    fn element(&self, css: &str) -> anyhow::Result<String> {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        v.as_object()
            .and_then(|m| m.values().next())
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no element {css}: {v}"))
    }

    fn click(&self, css: &str) -> anyhow::Result<()> {
        let id = self.element(css)?;
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})))
            .map(drop)
    }

    fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let id = self.element(css)?;
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .map(drop)
    }

    /// The text of the first element matching `css`, or `None`.
    fn text(&self, css: &str) -> anyhow::Result<Option<String>> {
        let v = self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )?;
        Ok(v.as_str().map(str::to_owned))
    }

    /// Waits (bounded) until `css`'s text is `want`.
    fn wait_text(&self, css: &str, want: &str) -> anyhow::Result<()> {
        wait_for(
            Duration::from_secs(20),
            &format!("{css} to read {want}"),
            || self.text(css).ok().flatten().filter(|t| t == want),
        )
        .map(drop)
        .map_err(|e| anyhow::anyhow!("{e}; the page: {}", self.state()))
    }

    /// Where the page is and what it says, for a failure's message.
    fn state(&self) -> String {
        self.js(
            "return [location.href, document.querySelector('#status')?.textContent, document.querySelector('#login-error')?.textContent, document.body.innerText.slice(0, 400)].join(' | ');",
            json!([]),
        )
        .map(|v| v.to_string())
        .unwrap_or_else(|e| e.to_string())
    }

    fn screenshot(&self, name: &str) -> anyhow::Result<()> {
        let Ok(dir) = std::env::var("DASHBOARD_SCREENSHOTS") else {
            return Ok(());
        };
        let png = self.cmd("GET", "/screenshot", None)?;
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or_default())?;
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            std::path::Path::new(&dir).join(format!("{name}.png")),
            bytes,
        )?;
        Ok(())
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self
            .driver
            .call("DELETE", &format!("/session/{}", self.session), None);
    }
}

/// [`common::poll::blocking`] (the shared bounded wait) as an `anyhow` result.
fn wait_for<T>(limit: Duration, what: &str, check: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    Ok(common::poll::blocking(limit, what, check)?)
}

fn queue_cell(field: &str) -> String {
    format!("tr[data-queue=\"/ dash.q\"] td[data-field=\"{field}\"]")
}

#[test]
#[ignore = "needs chromium and chromedriver: apt-get install chromium chromium-driver"]
fn the_dashboard_shows_queue_counts_as_clients_change_them_and_purges() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let (b, base) = rt.block_on(common::http::start_with_api(broker::Broker::builder()))?;
    let url = b.amqp_url();
    let (conn, ch) = rt.block_on(async {
        let conn = Connection::connect(
            &url,
            ConnectionProperties::default().with_connection_name("dashboard-test".into()),
        )
        .await?;
        let ch = conn.create_channel().await?;
        ch.queue_declare(
            "dash.q".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
        for i in 0..3 {
            ch.basic_publish(
                "".into(),
                "dash.q".into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await?;
        }
        anyhow::Ok((conn, ch))
    })?;

    let driver = Driver::start()?;
    let browser = Browser::open(&driver)?;
    browser.go(&format!("{base}/?refresh=200"))?;
    // Wrong password first: the page says so and shows no data.
    browser.type_into("#user", "guest")?;
    browser.type_into("#password", "wrong")?;
    browser.click("#login-button")?;
    wait_for(Duration::from_secs(10), "the login error", || {
        browser
            .text("#login-error")
            .ok()
            .flatten()
            .filter(|t| !t.is_empty())
    })
    .map_err(|e| anyhow::anyhow!("{e}; the page: {}", browser.state()))?;
    browser.js("document.querySelector('#password').value = '';", json!([]))?;
    browser.type_into("#password", "guest")?;
    browser.click("#login-button")?;
    browser.wait_text("#who", "guest (administrator)")?;
    // The form goes once logged in (it is not laid out any more).
    wait_for(Duration::from_secs(10), "the login form to go", || {
        let shown = browser.js(
            "return document.querySelector('#login').offsetParent !== null;",
            json!([]),
        );
        (shown.ok()? == json!(false)).then_some(())
    })?;
    browser.wait_text("#totals b[data-field=\"messages_ready\"]", "3")?;
    browser.wait_text("#totals b[data-field=\"connections\"]", "1")?;
    if std::env::var_os("DASHBOARD_SCREENSHOTS").is_some() {
        // For the picture: traffic for two of the broker's 5 s rate samples, so the
        // rates and the chart show something.
        rt.block_on(traffic(&url, Duration::from_secs(11)))?;
    }
    browser.screenshot("overview")?;

    browser.click("#tabs button[data-tab=\"queues\"]")?;
    browser.wait_text(&queue_cell("messages_ready"), "3")?;
    browser.wait_text(&queue_cell("messages_unacknowledged"), "0")?;
    // A consumer takes one without acking: 2 ready, 1 unacked.
    let _delivery =
        rt.block_on(ch.basic_get("dash.q".into(), BasicGetOptions { no_ack: false }))?;
    browser.wait_text(&queue_cell("messages_ready"), "2")?;
    browser.wait_text(&queue_cell("messages_unacknowledged"), "1")?;
    browser.screenshot("queues")?;
    // Purge: the button asks once more, then the ready messages go.
    let purge = "button[data-action=\"purge\"][data-queue=\"/ dash.q\"]";
    browser.click(purge)?;
    browser.wait_text(purge, "Sure?")?;
    browser.click(purge)?;
    browser.wait_text(&queue_cell("messages_ready"), "0")?;
    browser.wait_text(&queue_cell("messages_unacknowledged"), "1")?;

    browser.click("#tabs button[data-tab=\"exchanges\"]")?;
    browser.wait_text(
        "tr[data-exchange=\"/ amq.direct\"] td:nth-child(3)",
        "direct",
    )?;
    browser.screenshot("exchanges")?;

    browser.click("#tabs button[data-tab=\"connections\"]")?;
    let row = wait_for(Duration::from_secs(20), "the connection listed", || {
        browser
            .js(
                "const r = document.querySelector('tr[data-connection]'); return r ? r.dataset.connection : null;",
                json!([]),
            )
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
    })?;
    browser.screenshot("connections")?;
    let close = format!("button[data-action=\"close\"][data-connection=\"{row}\"]");
    browser.click(&close)?;
    browser.wait_text(&close, "Sure?")?;
    browser.click(&close)?;
    // The broker closed it: the client sees its connection go.
    wait_for(
        Duration::from_secs(20),
        "the client's connection to close",
        || (!conn.status().connected()).then_some(()),
    )?;
    browser.wait_text("#totals b[data-field=\"connections\"]", "0")?;
    drop(browser);
    rt.block_on(b.shutdown());
    Ok(())
}

/// About 200 messages a second through a queue of their own, consumed and acked, for
/// `how_long` (the screenshots only).
async fn traffic(url: &str, how_long: Duration) -> anyhow::Result<()> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        "dash.traffic".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.basic_qos(50, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            "dash.traffic".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let acker = tokio::spawn(async move {
        use futures::StreamExt;
        // Acks paced slower than the publishes (the workload's shape, not a wait): the
        // backlog shows in the chart.
        let mut pace = tokio::time::interval(Duration::from_millis(6));
        while let Some(Ok(d)) = consumer.next().await {
            pace.tick().await;
            let _ = d.acker.ack(BasicAckOptions::default()).await;
        }
    });
    let until = tokio::time::Instant::now() + how_long;
    let mut pace = tokio::time::interval(Duration::from_millis(5));
    while tokio::time::Instant::now() < until {
        pace.tick().await;
        ch.basic_publish(
            "".into(),
            "dash.traffic".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await?;
    }
    acker.abort();
    conn.close(200, "done".into()).await?;
    Ok(())
}
