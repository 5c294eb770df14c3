pub mod bench;
pub mod bench_model;
pub mod convert;
pub mod datasets;
pub mod doctor;
pub mod fuse;
pub mod generate;
mod hub_args;
pub mod jobs;
pub mod migrate;
pub mod models;
pub mod pull;
pub mod quickstart;
pub mod serve;
pub mod train;
pub mod worker;

use std::sync::OnceLock;

use hub::config::DeviceSetting;

pub use hub_args::{HubArgs, load_config, open_hub, print_json, runtime};

static DEVICE_FLAG: OnceLock<Option<DeviceSetting>> = OnceLock::new();

/// Records the global `--device` flag (called once by `main`, before any command).
pub fn set_device_flag(device: Option<DeviceSetting>) {
    let _ = DEVICE_FLAG.set(device);
}

/// The `--device` flag, if given: the highest-precedence device setting.
pub fn device_flag() -> Option<DeviceSetting> {
    DEVICE_FLAG.get().copied().flatten()
}
