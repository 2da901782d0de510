//! One e2e test binary; each module is one area of behaviour, driven through real processes.

mod packaging;
mod skeleton;
mod status;
mod supervisor;
mod tidy;
mod ws;
