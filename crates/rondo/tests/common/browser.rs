//! A real headless Chromium through chromedriver, for the dashboard tests: chromedriver on a
//! free loopback port (killed by PID when dropped), a session at 1280 × 1000, a click that
//! survives the page redrawing, and a way to close the session even when the test fails.

use std::time::Duration;

use serde_json::json;

/// chromedriver on a free loopback port, killed when dropped.
pub struct Driver {
    child: std::process::Child,
    pub port: u16,
    pub _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver and waits until it listens.
pub fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver (Debian package chromium-driver; scripts/test installs it)");
    let driver = Driver {
        child,
        port,
        _profile: tempfile::tempdir().unwrap(),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    driver
}

/// A headless Chromium session (1280 × 1000, its own profile) through `driver`.
pub async fn session(driver: &Driver) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    let profile = format!("--user-data-dir={}", driver._profile.path().display());
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--disable-dev-shm-usage", "--window-size=1280,1000", profile,
        ]}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    fantoccini::ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session through chromedriver")
}

/// The text of the first element `css` selects (empty if none).
pub async fn text(browser: &fantoccini::Client, css: &str) -> String {
    match browser.find(fantoccini::Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Clicks the element `css` selects, finding it again if the page redrew it between the
/// find and the click (the dashboard re-renders its table on every refresh).
pub async fn click(browser: &fantoccini::Client, css: &str) {
    super::eventually_async(Duration::from_secs(10), css, || async {
        match browser.find(fantoccini::Locator::Css(css)).await {
            Ok(element) => element.click().await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
}

/// Runs a future, catching a panic so the caller can clean up first.
pub async fn catch(
    f: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::any::Any + Send>> {
    match tokio::spawn(f).await {
        Ok(()) => Ok(()),
        Err(e) => Err(e
            .try_into_panic()
            .unwrap_or_else(|e| Box::new(e.to_string()))),
    }
}
