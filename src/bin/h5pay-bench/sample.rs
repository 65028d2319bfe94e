//! One result event of the worker's, as the broker delivered it: its body
//! and its properties. The skeleton publishes the same bytes and the same
//! properties for each of its intents, so that the broker and the bench's
//! consumer do the same work in both runs and the ratio is left with the
//! worker's own work (the contract requires the event and its CloudEvents
//! properties; they are I/O, not work the worker could leave out).

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventSample {
    /// The intent's pay_trace_no as the event holds it; each skeleton
    /// intent puts its own in its place.
    pub pay_trace_no: String,
    pub body: String,
    /// The string-valued headers (the CloudEvents properties).
    pub headers: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub message_id: Option<String>,
    pub app_id: Option<String>,
    pub kind: Option<String>,
}

impl EventSample {
    /// The sample of a delivered `ready` event of intent `pay_trace_no`.
    pub fn of(d: &Delivery, pay_trace_no: &str) -> Option<EventSample> {
        let p = &d.properties;
        let text = |s: &Option<ShortString>| s.as_ref().map(|v| v.as_str().to_owned());
        let headers = p
            .headers()
            .as_ref()
            .map(|t| {
                t.inner()
                    .iter()
                    .filter_map(|(k, v)| match v {
                        AMQPValue::LongString(s) => Some((
                            k.as_str().to_owned(),
                            String::from_utf8_lossy(s.as_bytes()).into_owned(),
                        )),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(EventSample {
            pay_trace_no: pay_trace_no.to_owned(),
            body: String::from_utf8(d.data.clone()).ok()?,
            headers,
            content_type: text(p.content_type()),
            message_id: text(p.message_id()),
            app_id: text(p.app_id()),
            kind: text(p.kind()),
        })
    }

    pub fn write(&self, path: &std::path::Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_vec(self)?)?;
        Ok(())
    }

    pub fn read(path: &std::path::Path) -> anyhow::Result<EventSample> {
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    }

    /// What is the same for every intent: the properties without the
    /// correlation_id, built once.
    pub fn properties(&self) -> BasicProperties {
        let mut table = FieldTable::default();
        for (k, v) in &self.headers {
            table.insert(
                k.as_str().into(),
                AMQPValue::LongString(LongString::from(v.as_str())),
            );
        }
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(table);
        let short = |v: &Option<String>| v.as_deref().map(ShortString::from);
        if let Some(v) = short(&self.content_type) {
            props = props.with_content_type(v);
        }
        if let Some(v) = short(&self.message_id) {
            props = props.with_message_id(v);
        }
        if let Some(v) = short(&self.app_id) {
            props = props.with_app_id(v);
        }
        if let Some(v) = short(&self.kind) {
            props = props.with_type(v);
        }
        props
    }

    /// The body for intent `pay_trace_no`.
    pub fn body_for(&self, pay_trace_no: &str) -> Vec<u8> {
        self.body
            .replace(&self.pay_trace_no, pay_trace_no)
            .into_bytes()
    }
}
