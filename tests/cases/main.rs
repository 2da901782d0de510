//! One e2e test binary; each module is one area of behaviour, driven through real processes.

mod dashboard;
mod hostile;
mod openclaw;
mod packaging;
mod proof;
mod report;
mod shield;
mod skeleton;
mod sqlite;
mod status;
mod supervisor;
mod tidy;
mod ws;
