//! A minimal W3C WebDriver client over plain HTTP: Debian's headless Chromium driven through
//! chromedriver (both installed by `scripts/install-tools`), for the dashboard's browser test.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session; the session and chromedriver end when it is dropped.
pub struct Browser {
    driver: Child,
    address: String,
    session: String,
    _profile: tempfile::TempDir,
}

/// `$var`, else `default`, which must exist.
fn tool(var: &str, default: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    if !path.exists() {
        bail!(
            "{} not found: run scripts/install-tools (it installs Debian's chromium and chromium-driver), or set {var}",
            path.display()
        );
    }
    Ok(path)
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session with a fresh profile.
    pub fn start() -> anyhow::Result<Self> {
        let chromium = tool("COXSWAIN_CHROMIUM", "/usr/bin/chromium")?;
        let chromedriver = tool("COXSWAIN_CHROMEDRIVER", "/usr/bin/chromedriver")?;
        let address = crate::free_address()?;
        let port = address.rsplit(':').next().unwrap_or_default().to_owned();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", chromedriver.display()))?;
        let profile = tempfile::tempdir()?;
        let mut browser = Self {
            driver,
            address,
            session: String::new(),
            _profile: profile,
        };
        browser.wait_ready()?;
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
        ];
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let answer = browser.call("POST", "/session", Some(&capabilities))?;
        browser.session = answer["sessionId"]
            .as_str()
            .context("no session id in chromedriver's answer")?
            .to_owned();
        Ok(browser)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(status) = self.call("GET", "/status", None)
                && status["ready"] == true
            {
                return Ok(());
            }
            if let Some(exit) = self.driver.try_wait()? {
                bail!("chromedriver exited with {exit}");
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not become ready within 20s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One WebDriver command: its `value`, or an error with WebDriver's message.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut stream = std::net::TcpStream::connect(&self.address)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.address,
            body.len()
        )?;
        let (status, body) = read_answer(&mut stream)?;
        let body = body.as_str();
        let value: Value = serde_json::from_str(body)
            .with_context(|| format!("{method} {path}: not JSON: {body}"))?;
        if status != 200 {
            bail!("{method} {path}: {status}: {}", value["value"]["message"]);
        }
        Ok(value["value"].clone())
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Loads `url`.
    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(&json!({"url": url})),
        )?;
        Ok(())
    }

    fn element(&self, css: &str) -> anyhow::Result<String> {
        let found = self.call(
            "POST",
            &self.session_path("/element"),
            Some(&json!({"using": "css selector", "value": css})),
        )?;
        Ok(found[ELEMENT]
            .as_str()
            .with_context(|| format!("no element {css}"))?
            .to_owned())
    }

    /// Types `text` into the element `css` selects.
    pub fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let id = self.element(css)?;
        self.call(
            "POST",
            &self.session_path(&format!("/element/{id}/value")),
            Some(&json!({"text": text})),
        )?;
        Ok(())
    }

    /// Clicks the element `css` selects.
    pub fn click(&self, css: &str) -> anyhow::Result<()> {
        let id = self.element(css)?;
        self.call(
            "POST",
            &self.session_path(&format!("/element/{id}/click")),
            Some(&json!({})),
        )?;
        Ok(())
    }

    /// Runs `script` (a function body; `return` its answer) in the page.
    pub fn script(&self, script: &str) -> anyhow::Result<Value> {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(&json!({"script": script, "args": []})),
        )
    }

    /// The value of the cookie `name` the browser holds for the page (HttpOnly ones too).
    pub fn cookie(&self, name: &str) -> anyhow::Result<String> {
        let cookie = self.call("GET", &self.session_path(&format!("/cookie/{name}")), None)?;
        Ok(cookie["value"]
            .as_str()
            .with_context(|| format!("no cookie {name}"))?
            .to_owned())
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        use base64::Engine as _;
        let png = self.call("GET", &self.session_path("/screenshot"), None)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().context("no screenshot in the answer")?)?;
        std::fs::write(path, bytes)?;
        Ok(())
    }
}

/// Reads one HTTP/1.1 answer: its status and body (by `Content-Length`; chromedriver keeps
/// the connection open whatever the request asked).
fn read_answer(stream: &mut std::net::TcpStream) -> anyhow::Result<(u16, String)> {
    use std::io::BufRead as _;
    let mut reader = std::io::BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse()?;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok((status, String::from_utf8(body)?))
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &self.session_path(""), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
