//! The admin UI in a real headless Chromium (Debian `chromium` +
//! `chromium-driver`, driven over WebDriver by fantoccini) against a real
//! server (`serve_on_with`, in-process worker, SQLite), with the tiny parity
//! fixture model so jobs finish in seconds.
//!
//! Flows: register a model and a dataset through the UI's forms, see the
//! API's error (naming the line) for a bad upload, start a training job and
//! watch it finish on its page without a reload (progress, log, loss chart
//! with points), compare runs, chat in the playground with streamed tokens,
//! unload the model on the system page, cancel a job; with an API token: the
//! login page, the HttpOnly SameSite=Strict cookie, and a state-changing
//! request without the CSRF token refused with 403.
//!
//! Every page is saved as `target/ui-screenshots/<name>-{wide,narrow}.png`
//! at 1280 px and ~400 px wide, where the page must not scroll sideways.
//!
//! Without Chromium the tests skip with a reason, except under `CI`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::server::{ServeOptions, WorkerOptions, serve_on_with};
use common::http::{copy_dir, tiny_model};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Chromium (or Chrome) and its WebDriver: `$CHROMIUM` / `$CHROMEDRIVER` if set, else
/// Debian's packages on Linux, Homebrew's casks on macOS (`brew install --cask chromium
/// chromedriver`).
fn browser_paths() -> (PathBuf, PathBuf) {
    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let first = |candidates: &[&str]| {
        candidates
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(candidates[0]))
    };
    let (browser, driver) = if cfg!(target_os = "macos") {
        (
            first(&[
                "/Applications/Chromium.app/Contents/MacOS/Chromium",
                "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
            ]),
            first(&[
                "/opt/homebrew/bin/chromedriver",
                "/usr/local/bin/chromedriver",
            ]),
        )
    } else {
        (
            PathBuf::from("/usr/bin/chromium"),
            PathBuf::from("/usr/bin/chromedriver"),
        )
    };
    (
        env("CHROMIUM").unwrap_or(browser),
        env("CHROMEDRIVER").unwrap_or(driver),
    )
}

fn browser_available(test: &str) -> bool {
    let (chromium, chromedriver) = browser_paths();
    let found = if chromium.is_file() && chromedriver.is_file() {
        Ok(())
    } else {
        Err(format!(
            "{} / {} missing (scripts/setup-test-deps.sh installs them; or set CHROMIUM and \
             CHROMEDRIVER)",
            chromium.display(),
            chromedriver.display()
        ))
    };
    test_support::require(test, found).is_some()
}

/// A chromedriver process on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_browser() -> (Driver, Client) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (chromium, chromedriver) = browser_paths();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: profile,
    };
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--no-first-run", "--disable-component-update",
                "--disable-sync", "--hide-scrollbars", "--window-size=1280,1000",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ]
        }),
    );
    let t = Instant::now();
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&driver.url)
            .await
        {
            Ok(c) => break c,
            Err(e) if t.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start a Chromium session: {e}"),
        }
    };
    (driver, client)
}

/// A served hub on a free port with the in-process worker.
struct Server {
    base: String,
    root: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<hub::HubResult<()>>,
    _dir: tempfile::TempDir,
}

async fn start_server(token: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = hub::HubConfig::with_data_dir(dir.path().join("data"));
    config.database_url = hub::store::sqlite_url(&dir.path().join("hub.db"));
    config.api_token = token.map(|t| hub::config::Secret::new(t.to_string()));
    let store = hub::Store::connect(&config.database_url).await.unwrap();
    store.migrate().await.unwrap();
    let hub = hub::Hub::with_store(config, store).unwrap();
    let root = hub.import_root().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let options = ServeOptions {
        worker: Some(WorkerOptions {
            id: "in-process".into(),
            poll_interval: Duration::from_millis(50),
            ..WorkerOptions::default()
        }),
    };
    let task = tokio::spawn(serve_on_with(hub, listener, options, async move {
        let _ = stop_rx.changed().await;
    }));
    Server {
        base,
        root,
        stop,
        task,
        _dir: dir,
    }
}

impl Server {
    async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap().unwrap();
    }
}

fn screenshot_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Saves a screenshot of the current page as `<name>.png`.
async fn shot(c: &Client, name: &str) {
    // let the last poll and image loads land
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// Polls a JavaScript expression until it is truthy; returns its value.
async fn wait_js(c: &Client, expr: &str, secs: u64, what: &str) -> Value {
    let t = Instant::now();
    loop {
        let v = c
            .execute(&format!("return ({expr});"), vec![])
            .await
            .unwrap_or(Value::Null);
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if truthy {
            return v;
        }
        if t.elapsed() > Duration::from_secs(secs) {
            let body = c
                .execute("return document.body.innerText", vec![])
                .await
                .unwrap_or_default();
            panic!("timed out waiting for {what} ({expr}); page text:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
/// The text of the element with id `id`.
async fn text_of(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
}

/// Clicks the element with id `id`.
async fn click(c: &Client, id: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Picks `value` in the `<select>` with id `id`.
async fn select(c: &Client, id: &str, value: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .select_by_value(value)
        .await
        .unwrap();
}

/// Waits until the page `<main data-page=…>` is shown.
async fn wait_page(c: &Client, page: &str, secs: u64) {
    let expr = format!("document.querySelector('main[data-page={page}]')");
    wait_js(c, &expr, secs, &format!("the {page} page")).await;
}

/// The text of the form's status line once it says something final.
async fn form_result(c: &Client, form: &str) -> (bool, String) {
    let sel = format!("{form} .msg");
    let v = wait_js(
        c,
        &format!(
            "(() => {{ const m = document.querySelector('{sel}'); \
             return m && (m.classList.contains('ok') || m.classList.contains('err')) \
             ? [m.classList.contains('ok'), m.textContent] : null; }})()"
        ),
        60,
        &format!("the result of {form}"),
    )
    .await;
    (
        v[0].as_bool().unwrap(),
        v[1].as_str().unwrap_or_default().to_string(),
    )
}

async fn fill(c: &Client, id: &str, value: &str) {
    let e = c.find(Locator::Id(id)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn set_value(c: &Client, id: &str, value: &str) {
    c.execute(
        "document.getElementById(arguments[0]).value = arguments[1];",
        vec![json!(id), json!(value)],
    )
    .await
    .unwrap();
}

async fn submit(c: &Client, form: &str) {
    c.find(Locator::Css(&format!("{form} button[type=submit]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Screenshots `pages` at 1280 px and ~400 px; at the narrow width the page
/// must not scroll sideways (tables scroll inside their own box).
async fn screenshot_pages(c: &Client, base: &str, pages: &[(&str, String)]) {
    for (width, suffix) in [(1280u32, "wide"), (400, "narrow")] {
        c.set_window_size(width, 1000).await.unwrap();
        for (name, path) in pages {
            c.goto(&format!("{base}{path}")).await.unwrap();
            wait_js(c, "document.readyState === 'complete'", 20, "page load").await;
            let (scroll, inner): (f64, f64) = serde_json::from_value(
                c.execute(
                    "return [document.documentElement.scrollWidth, window.innerWidth];",
                    vec![],
                )
                .await
                .unwrap(),
            )
            .unwrap();
            assert!(
                scroll <= inner + 1.0,
                "{name} at {width}px scrolls sideways: {scroll} > {inner}"
            );
            if suffix == "narrow" {
                assert!(inner <= 500.0, "narrow window is {inner}px wide");
            }
            shot(c, &format!("{name}-{suffix}")).await;
        }
    }
    c.set_window_size(1280, 1000).await.unwrap();
}

fn count_rows() -> String {
    let mut rows = String::new();
    for i in 0..12 {
        rows +=
            &json!({"prompt": format!("Count to {i}."), "completion": format!("{i}")}).to_string();
        rows.push('\n');
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_ui_flows_in_chromium() {
    if !browser_available("admin_ui_flows_in_chromium") {
        return;
    }
    let Some(model) = tiny_model("admin_ui_flows_in_chromium") else {
        return;
    };
    let t0 = Instant::now();
    let server = start_server(None).await;
    copy_dir(&model, &server.root.join("tiny"));
    let data = server.root.join("count");
    std::fs::create_dir_all(&data).unwrap();
    for split in ["train", "valid", "test"] {
        std::fs::write(data.join(format!("{split}.jsonl")), count_rows()).unwrap();
    }
    let bad = tempfile::tempdir().unwrap();
    let bad_file = bad.path().join("bad.jsonl");
    std::fs::write(
        &bad_file,
        "{\"text\": \"fine\"}\n{\"text\": \"also fine\"}\n{\"text\": 12\n",
    )
    .unwrap();
    let (_driver, c) = start_browser().await;
    let base = server.base.clone();
    let mut laps = Vec::new();
    let mut lap = |what: &str, t: &mut Instant| {
        laps.push(format!("{what} {:.1?}", t.elapsed()));
        *t = Instant::now();
    };
    let mut t = Instant::now();

    // `/` redirects to the models page
    c.goto(&base).await.unwrap();
    wait_page(&c, "models", 10).await;
    assert!(c.current_url().await.unwrap().path().starts_with("/ui"));

    // register a model through the form
    fill(&c, "rm-name", "tiny").await;
    fill(&c, "rm-path", "tiny").await;
    fill(&c, "rm-alias", "production").await;
    submit(&c, "#register-model").await;
    let (ok, text) = form_result(&c, "#register-model").await;
    assert!(ok && text.contains("Registered tiny v1"), "{text}");
    // it goes on to the model's page: version, alias, architecture
    wait_page(&c, "model", 10).await;
    let versions = text_of(&c, "versions-table").await;
    assert!(
        versions.contains("v1") && versions.contains("ready"),
        "{versions}"
    );
    assert!(
        versions.contains("production") && versions.contains("llama"),
        "{versions}"
    );
    // tags through the form
    fill(&c, "model-tags", "fixture, tiny").await;
    submit(&c, "#set-tags").await;
    let (ok, text) = form_result(&c, "#set-tags").await;
    assert!(ok, "{text}");
    // an alias pointing at a version that does not exist: the API's error
    fill(&c, "alias-name", "staging").await;
    fill(&c, "alias-version", "7").await;
    submit(&c, "#set-alias").await;
    let (ok, text) = form_result(&c, "#set-alias").await;
    assert!(!ok && text.contains('7'), "{text}");
    lap("model registered", &mut t);

    // the model list's search
    c.goto(&format!("{base}/ui/models?q=tin")).await.unwrap();
    let list = text_of(&c, "models-table").await;
    assert!(
        list.contains("tiny") && list.contains("fixture, tiny"),
        "{list}"
    );
    c.goto(&format!("{base}/ui/models?q=nothing-like-it"))
        .await
        .unwrap();
    let list = text_of(&c, "models-table").await;
    assert!(list.contains("No models match"), "{list}");

    // datasets: register a folder, then a bad upload shows the line
    c.goto(&format!("{base}/ui/datasets")).await.unwrap();
    fill(&c, "rd-name", "count").await;
    fill(&c, "rd-path", "count").await;
    submit(&c, "#register-dataset").await;
    let (ok, text) = form_result(&c, "#register-dataset").await;
    assert!(ok && text.contains("Registered count v1"), "{text}");
    wait_page(&c, "dataset", 10).await;
    wait_js(
        &c,
        "document.querySelectorAll('#preview tbody tr').length === 10",
        10,
        "preview rows",
    )
    .await;
    let preview = text_of(&c, "preview").await;
    assert!(preview.contains("Count to 0."), "{preview}");
    c.goto(&format!("{base}/ui/datasets")).await.unwrap();
    fill(&c, "ud-name", "broken").await;
    c.find(Locator::Id("ud-file"))
        .await
        .unwrap()
        .send_keys(bad_file.to_str().unwrap())
        .await
        .unwrap();
    submit(&c, "#upload-dataset").await;
    let (ok, text) = form_result(&c, "#upload-dataset").await;
    assert!(
        !ok && text.contains("line 3"),
        "upload error must name line 3: {text}"
    );
    shot(&c, "datasets-upload-error").await;
    lap("datasets", &mut t);

    // start a job through the form; the job page follows it to the end
    c.goto(&format!("{base}/ui/jobs")).await.unwrap();
    select(&c, "sj-model", "tiny").await;
    select(&c, "sj-dataset", "count").await;
    let iters: String = c
        .find(Locator::Id("sj-iters"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(iters, "1000", "mlx-lm's default iterations are filled in");
    for (id, v) in [
        ("sj-iters", "8"),
        ("sj-batch", "2"),
        ("sj-layers", "-1"),
        ("sj-lr", "0.001"),
        ("sj-report", "2"),
        ("sj-eval", "4"),
        ("sj-valb", "1"),
        ("sj-seq", "48"),
        ("sj-seed", "2"),
    ] {
        set_value(&c, id, v).await;
    }
    submit(&c, "#start-job").await;
    let (ok, text) = form_result(&c, "#start-job").await;
    assert!(ok && text.contains("Started job #1"), "{text}");
    c.goto(&format!("{base}/ui/jobs/1")).await.unwrap();
    let loaded_at: f64 = c
        .execute("return window.performance.timeOrigin", vec![])
        .await
        .unwrap()
        .as_f64()
        .unwrap();
    wait_js(
        &c,
        "document.getElementById('job-state').textContent === 'succeeded'",
        120,
        "job 1 to succeed",
    )
    .await;
    // no reload happened: the same document saw the job finish
    let still: f64 = c
        .execute("return window.performance.timeOrigin", vec![])
        .await
        .unwrap()
        .as_f64()
        .unwrap();
    assert_eq!(loaded_at, still, "the page was reloaded");
    wait_js(
        &c,
        "document.getElementById('job-progress').value === 100",
        10,
        "progress 100",
    )
    .await;
    let log = wait_js(
        &c,
        "(t => t.includes('Iter 8: Train loss') && t.includes('Job succeeded') ? t : null)(document.getElementById('job-log').textContent)",
        20,
        "the log of 4 reports",
    )
    .await;
    assert!(log.as_str().unwrap().contains("Val loss"), "{log}");
    // the loss chart: an image drawn by the server, with one circle per report
    wait_js(
        &c,
        "(i => i && i.complete && i.naturalWidth > 0)(document.querySelector('#job-charts img[data-key=train_loss]'))",
        20,
        "the train loss chart",
    )
    .await;
    let circles = c
        .execute_async(
            "const cb = arguments[arguments.length - 1];
             fetch(document.querySelector('#job-charts img[data-key=train_loss]').src)
               .then(r => r.text()).then(t => cb((t.match(/<circle/g) || []).length));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        circles,
        json!(4),
        "train loss chart points (steps 2, 4, 6, 8)"
    );
    shot(&c, "job-succeeded").await;
    lap("job 1 trained and charted", &mut t);

    // runs: list, a run's page, the comparison of one run
    c.goto(&format!("{base}/ui/runs")).await.unwrap();
    click(&c, "pick-1").await;
    submit(&c, "#compare-form").await;
    wait_js(
        &c,
        "(i => i && i.complete && i.naturalWidth > 0)(document.getElementById('compare-chart'))",
        20,
        "the comparison chart",
    )
    .await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .query()
            .unwrap()
            .contains("runs=1")
    );

    // playground: the adapter version made by the job answers, streamed
    c.goto(&format!("{base}/ui/playground?model=tiny-lora"))
        .await
        .unwrap();
    let picked: String = c
        .find(Locator::Id("pg-model"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(picked, "tiny-lora:1");
    set_value(&c, "pg-temp", "0").await;
    set_value(&c, "pg-max", "8").await;
    fill(&c, "pg-prompt", "Count to 3.").await;
    submit(&c, "#chat-form").await;
    let stats = wait_js(
        &c,
        "document.getElementById('chat-stats').textContent",
        120,
        "the streamed answer",
    )
    .await;
    let stats = stats.as_str().unwrap().to_string();
    assert!(
        stats.contains("TTFT") && stats.contains("tokens/s"),
        "{stats}"
    );
    let answer = c
        .find(Locator::Css("#chat-log .assistant .text"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!answer.is_empty(), "empty answer ({stats})");
    let (ok, text) = form_result(&c, "#chat-form").await;
    assert!(ok, "{text}");
    shot(&c, "playground-answer").await;
    lap("playground", &mut t);

    // system: the loaded model, unloaded with its button
    c.goto(&format!("{base}/ui/system")).await.unwrap();
    wait_js(
        &c,
        "document.querySelector('#ps-table [data-unload=\"tiny-lora:1\"]')",
        10,
        "tiny-lora:1 in the loaded models",
    )
    .await;
    let sys = c
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        sys.contains("MLX")
            && sys.contains("BLAS")
            && sys.contains(mlx::system::default_device().name())
            && sys.contains("Physical"),
        "{sys}"
    );
    shot(&c, "system-loaded").await;
    c.find(Locator::Css("#ps-table [data-unload=\"tiny-lora:1\"]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &c,
        "document.getElementById('ps-msg').textContent.includes('Unloaded tiny-lora:1')",
        20,
        "the unload message",
    )
    .await;
    wait_js(
        &c,
        "document.querySelector('#ps-table').textContent.includes('No model is loaded')",
        10,
        "the empty pool",
    )
    .await;

    // cancel: a long job, cancelled from the jobs list, which updates live
    c.goto(&format!("{base}/ui/jobs")).await.unwrap();
    select(&c, "sj-model", "tiny").await;
    for (id, v) in [
        ("sj-iters", "100000"),
        ("sj-batch", "2"),
        ("sj-seq", "48"),
        ("sj-layers", "-1"),
    ] {
        set_value(&c, id, v).await;
    }
    submit(&c, "#start-job").await;
    let (ok, text) = form_result(&c, "#start-job").await;
    assert!(ok && text.contains("Started job #2"), "{text}");
    wait_js(
        &c,
        "document.querySelector('#jobs-table [data-cancel=\"2\"]')",
        10,
        "job 2's cancel button",
    )
    .await;
    c.find(Locator::Css("#jobs-table [data-cancel=\"2\"]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &c,
        "document.getElementById('jobs-msg').textContent.includes('Job #2')",
        10,
        "the cancel message",
    )
    .await;
    wait_js(
        &c,
        "(r => r && r.textContent.includes('cancelled'))(document.querySelector('#jobs-table tr[data-job=\"2\"]'))",
        60,
        "job 2 cancelled in the list",
    )
    .await;
    shot(&c, "jobs-cancelled").await;
    lap("cancel", &mut t);

    let enc_name = "tiny";
    screenshot_pages(
        &c,
        &base,
        &[
            ("models", "/ui/models".into()),
            ("model", format!("/ui/models/{enc_name}")),
            ("model-lora", "/ui/models/tiny-lora".into()),
            ("datasets", "/ui/datasets".into()),
            ("dataset", "/ui/datasets/count".into()),
            ("jobs", "/ui/jobs".into()),
            ("job", "/ui/jobs/1".into()),
            ("runs", "/ui/runs".into()),
            ("run", "/ui/runs/1".into()),
            ("compare", "/ui/runs/compare?runs=1,2&key=train_loss".into()),
            ("playground", "/ui/playground".into()),
            ("system", "/ui/system".into()),
        ],
    )
    .await;
    lap("screenshots", &mut t);

    // the lineage chain on the adapter's page links base, job, run, dataset
    c.goto(&format!("{base}/ui/models/tiny-lora"))
        .await
        .unwrap();
    let chain = c
        .find(Locator::Css(".chain"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in ["base tiny v1", "job #1", "run #1", "dataset count v1"] {
        assert!(chain.contains(want), "lineage lacks {want}: {chain}");
    }

    c.close().await.unwrap();
    server.shutdown().await;
    eprintln!(
        "admin_ui_flows_in_chromium: {} — total {:.1?}; screenshots in {}",
        laps.join(", "),
        t0.elapsed(),
        screenshot_dir().display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_cookie_and_csrf_in_chromium() {
    if !browser_available("login_cookie_and_csrf_in_chromium") {
        return;
    }
    let t0 = Instant::now();
    let token = "s3cret-token-for-the-ui-test";
    let server = start_server(Some(token)).await;
    let base = server.base.clone();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // open: /health, the login page, the assets; closed: the API, the pages
    assert_eq!(
        http.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{base}/ui/login"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let css = http
        .get(format!("{base}/ui/assets/app.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    let etag = css.headers()["etag"].to_str().unwrap().to_string();
    let again = http
        .get(format!("{base}/ui/assets/app.css"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304, "the ETag is honoured");
    assert_eq!(
        http.get(format!("{base}/api/models"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let page = http.get(format!("{base}/ui/models")).send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/ui/login?next=%2Fui%2Fmodels");

    let (_driver, c) = start_browser().await;
    c.goto(&format!("{base}/ui/jobs")).await.unwrap();
    wait_page(&c, "login", 10).await;
    shot(&c, "login-wide").await;
    fill(&c, "login-token", "wrong").await;
    submit(&c, "#login-form").await;
    let (ok, text) = form_result(&c, "#login-form").await;
    assert!(!ok && text.contains("not valid"), "{text}");
    fill(&c, "login-token", token).await;
    submit(&c, "#login-form").await;
    wait_page(&c, "jobs", 10).await;
    let cookie = c.get_named_cookie("mlx_hub_session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    assert!(
        !cookie.value().contains(token),
        "the cookie never holds the token"
    );
    let cookie_value = cookie.value().to_string();
    // the page's script cannot read it (HttpOnly)
    let js_cookies = c.execute("return document.cookie", vec![]).await.unwrap();
    assert!(!js_cookies.as_str().unwrap().contains("mlx_hub_session"));

    // an action through the page (cookie + the page's CSRF token) works
    let create = |with_csrf: bool| {
        format!(
            "const cb = arguments[arguments.length - 1];
             const h = {{'content-type': 'application/json'}};
             if ({with_csrf}) h['x-csrf-token'] = document.querySelector('meta[name=csrf-token]').content;
             fetch('/api/models', {{method: 'POST', headers: h, body: JSON.stringify({{name: 'm-' + Date.now()}})}})
               .then(r => r.json().then(b => cb([r.status, b])));"
        )
    };
    let ok = c.execute_async(&create(true), vec![]).await.unwrap();
    assert_eq!(ok[0], 201, "{ok}");
    let refused = c.execute_async(&create(false), vec![]).await.unwrap();
    assert_eq!(refused[0], 403, "{refused}");
    assert_eq!(
        refused[1]["error"]["code"], "csrf_token_invalid",
        "{refused}"
    );
    // GETs with the cookie need no CSRF token
    let listed = c
        .execute_async(
            "const cb = arguments[arguments.length - 1];
             fetch('/api/models').then(r => r.json()).then(b => cb(b.data.length));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(listed, 1);

    // a cross-site POST carrying the cookie but no token (what a forged form
    // would send if the browser attached the cookie) is refused
    let forged = http
        .post(format!("{base}/api/models"))
        .header("cookie", format!("mlx_hub_session={cookie_value}"))
        .header("origin", "http://evil.example")
        .json(&json!({"name": "forged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let body: Value = forged.json().await.unwrap();
    assert_eq!(body["error"]["code"], "csrf_token_invalid");
    // a tampered cookie is no session at all
    let tampered = http
        .get(format!("{base}/api/models"))
        .header("cookie", format!("mlx_hub_session={cookie_value}0"))
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 401);
    // the Bearer token still works without any cookie or CSRF token
    let bearer = http
        .post(format!("{base}/api/models"))
        .bearer_auth(token)
        .json(&json!({"name": "by-bearer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 201);

    // a real cross-site form in the browser: SameSite=Strict keeps the
    // cookie home, so the hub sees no session
    let evil = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_addr = evil.local_addr().unwrap();
    let target = base.replace("127.0.0.1", "localhost");
    let form_page = format!(
        "<!doctype html><form id=f method=post action='{target}/api/models' enctype='text/plain'>\
         <input name='{{\"name\":\"csrf\",\"x\":\"' value='\"}}'></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    let evil_app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let p = form_page.clone();
            async move { axum::response::Html(p) }
        }),
    );
    let evil_task = tokio::spawn(async move { axum::serve(evil, evil_app).await });
    // log in on `localhost` too, so the browser holds a cookie for the target site
    c.goto(&format!("{target}/ui/login")).await.unwrap();
    fill(&c, "login-token", token).await;
    submit(&c, "#login-form").await;
    wait_page(&c, "models", 10).await;
    c.goto(&format!("http://{evil_addr}/")).await.unwrap();
    let landed = wait_js(
        &c,
        "location.pathname === '/api/models' ? document.body.innerText : null",
        10,
        "the forged form's answer",
    )
    .await;
    assert!(
        landed.as_str().unwrap().contains("missing_token"),
        "the cross-site form must get no session: {landed}"
    );
    let names = http
        .get(format!("{base}/api/models"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(
        !names.to_string().contains("\"csrf\"") && !names.to_string().contains("forged"),
        "{names}"
    );
    evil_task.abort();

    // logging out clears the session
    c.goto(&format!("{base}/ui/models")).await.unwrap();
    click(&c, "logout").await;
    wait_page(&c, "login", 10).await;

    c.close().await.unwrap();
    server.shutdown().await;
    eprintln!("login_cookie_and_csrf_in_chromium: {:.1?}", t0.elapsed());
}
