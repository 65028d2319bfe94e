//! Broker-side isolation shared by the test binaries: `rabbitmqctl`, and a
//! vhost of a test's own (deleted on drop, with everything in it), whose
//! connections can be closed by the broker without touching anyone else's.

#![allow(dead_code)]

use std::process::{Command, Stdio};

/// Runs `rabbitmqctl` (as root, as CI does); whether it succeeded.
pub fn rabbitmqctl(args: &[&str]) -> bool {
    Command::new("rabbitmqctl")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `rabbitmqctl` output, or None if it failed.
pub fn rabbitmqctl_output(args: &[&str]) -> Option<String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A vhost of the test's own, deleted on drop.
pub struct Vhost(pub String);

impl Vhost {
    /// Creates it and gives `guest` every permission on it.
    pub fn create(name: &str) -> Vhost {
        assert!(
            rabbitmqctl(&["add_vhost", name]),
            "rabbitmqctl add_vhost {name} failed (run as root)"
        );
        assert!(rabbitmqctl(&[
            "set_permissions",
            "-p",
            name,
            "guest",
            ".*",
            ".*",
            ".*"
        ]));
        Vhost(name.to_owned())
    }

    /// `amqp://guest:guest@127.0.0.1:5672/<vhost>`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.0)
    }

    /// The broker closes every connection of this vhost (and only this one).
    pub fn close_all_connections(&self) {
        assert!(rabbitmqctl(&[
            "close_all_connections",
            "-p",
            &self.0,
            "test: closed by the broker"
        ]));
    }

    /// A user of this vhost with the given configure/write/read patterns,
    /// deleted on drop. Returns its AMQP URL.
    pub fn user(&self, name: &str, configure: &str, write: &str, read: &str) -> VhostUser {
        let password = "test-password";
        assert!(
            rabbitmqctl(&["add_user", name, password]),
            "add_user {name}"
        );
        assert!(rabbitmqctl(&[
            "set_permissions",
            "-p",
            &self.0,
            name,
            configure,
            write,
            read
        ]));
        VhostUser {
            name: name.to_owned(),
            url: format!("amqp://{name}:{password}@127.0.0.1:5672/{}", self.0),
        }
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_vhost", &self.0]);
    }
}

/// A broker user, deleted on drop.
pub struct VhostUser {
    pub name: String,
    pub url: String,
}

impl Drop for VhostUser {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_user", &self.name]);
    }
}
