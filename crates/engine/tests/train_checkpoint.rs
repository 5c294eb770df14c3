//! Gradient checkpointing (`TrainConfig::grad_checkpoint`, mlx-lm's
//! `--grad-checkpoint`): the same losses as without it, recorded in
//! `adapter_config.json`. Peak memory of both is printed, not asserted (the fixture
//! models are too small for the saving to be stable).

mod train_common;

use engine::models::Llama;
use engine::tokenizer::Tokenizer;
use engine::train::adapters::ADAPTER_CONFIG;
use engine::train::{AdapterSpec, DataOptions, FineTuneType, TrainConfig, load_dataset, train};
use train_common::*;

#[test]
fn checkpointed_training_gives_the_same_losses() {
    let Some(dir) = fixture_model("llama-untied-llama3rope-q4-g64") else {
        return;
    };
    let model = Llama::load(&dir).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    text_dataset(&tmp.path().join("data"));
    let data = load_dataset(&tmp.path().join("data"), &tok, &DataOptions::default()).unwrap();
    // LoRA on a quantized model, compiled (the CLI default); DoRA eager.
    for (ft, compile) in [(FineTuneType::Lora, true), (FineTuneType::Dora, false)] {
        let base = TrainConfig {
            adapter: AdapterSpec {
                fine_tune_type: ft,
                num_layers: -1,
                ..AdapterSpec::default()
            },
            learning_rate: 1e-2,
            iters: 6,
            batch_size: 4,
            steps_per_eval: 1000,
            seed: 5,
            compile,
            ..TrainConfig::default()
        };
        let ckpt = TrainConfig {
            grad_checkpoint: true,
            adapter_path: Some(tmp.path().join(format!("adapters-{}", ft.name()))),
            ..base.clone()
        };
        let mut runs = Vec::new();
        for c in [&base, &ckpt] {
            mlx::system::reset_peak_memory();
            let out = train(&model, &data, c, None, &mut |_| {}).unwrap();
            let peak = mlx::system::memory_stats().peak;
            eprintln!(
                "{} compile={compile} grad_checkpoint={}: peak {:.2} MB, losses {:?}",
                ft.name(),
                c.grad_checkpoint,
                peak as f64 / 1e6,
                out.step_losses
            );
            runs.push(out.step_losses);
        }
        assert_eq!(runs[0].len(), 6);
        for (a, b) in runs[0].iter().zip(&runs[1]) {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "{ft:?}: {a} vs {b}"
            );
        }
        let written: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(ckpt.adapter_path.unwrap().join(ADAPTER_CONFIG)).unwrap(),
        )
        .unwrap();
        assert_eq!(written["grad_checkpoint"], serde_json::json!(true));
    }
}
