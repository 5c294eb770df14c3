//! `mlx-hub quickstart --no-serve` on a fresh data dir, offline: the model
//! comes from the SmolLM2 GGUF that `scripts/fetch-smollm2.sh` cached (or pip),
//! the example dataset is registered, a LoRA job trains and registers an
//! adapter; a second run reuses all of it.
use std::process::Command;
use std::time::Instant;

fn quickstart(data: &std::path::Path, hf: &std::path::Path) -> (String, f64) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_mlx-hub"))
        .args(["quickstart", "--no-serve", "--iters", "2", "--data-dir"])
        .arg(data)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", hf)
        .env_remove("MLX_HUB_DATABASE_URL")
        .env_remove("MLX_HUB_DATA_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "quickstart failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (stdout, started.elapsed().as_secs_f64())
}

#[test]
fn quickstart_completes_on_a_fresh_data_dir_and_reruns_from_what_exists() {
    test_support::require!(test_support::smollm2_gguf());
    let dir = tempfile::tempdir().unwrap();
    let (data, hf) = (dir.path().join("data"), dir.path().join("hf"));
    let (first, t1) = quickstart(&data, &hf);
    eprintln!("first run {t1:.1}s:\n{first}");
    assert!(
        first.contains(
            "[1/4] model smollm2-135m-instruct v1 imported from SmolLM2-135M-Instruct-Q4_1.gguf"
        ),
        "{first}"
    );
    assert!(
        first.contains(
            "[2/4] dataset unicode-names v1 registered (chat, test 40, train 320, valid 40)"
        ),
        "{first}"
    );
    assert!(
        first.contains("[3/4] adapter smollm2-135m-instruct-lora v1 trained by job 1"),
        "{first}"
    );
    assert!(first.contains("train_loss"), "{first}");
    assert!(first.contains("quickstart done"), "{first}");

    let (second, t2) = quickstart(&data, &hf);
    eprintln!("second run {t2:.1}s:\n{second}");
    assert!(
        second.contains("model smollm2-135m-instruct v1 already registered"),
        "{second}"
    );
    assert!(
        second.contains("dataset unicode-names v1 already registered"),
        "{second}"
    );
    assert!(
        second.contains("adapter smollm2-135m-instruct-lora v1 already trained (job 1)"),
        "{second}"
    );
}
