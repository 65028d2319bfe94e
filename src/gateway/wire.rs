//! The wire types of `POST /api/openpay/v3/h5pay`, as the gateway's own
//! document (`docs/gateway-h5pay.md`) describes them, and the requests of
//! queryorder and closeorder (`docs/gateway-lifecycle.md`).

use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::sign;

/// Payment channel codes of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PayType {
    #[serde(rename = "300")]
    Alipay,
    #[serde(rename = "400")]
    Wechat,
    #[serde(rename = "600")]
    UnionPay,
}

impl PayType {
    /// The gateway's code: `"300"`, `"400"` or `"600"`.
    pub fn code(self) -> &'static str {
        match self {
            PayType::Alipay => "300",
            PayType::Wechat => "400",
            PayType::UnionPay => "600",
        }
    }

    /// Reads a code or a name in any case (`"400"`, `"wechat"`, `"WeChat"`).
    pub fn parse(s: &str) -> Option<PayType> {
        match s {
            "300" => Some(PayType::Alipay),
            "400" => Some(PayType::Wechat),
            "600" => Some(PayType::UnionPay),
            _ if s.eq_ignore_ascii_case("alipay") => Some(PayType::Alipay),
            _ if s.eq_ignore_ascii_case("wechat") => Some(PayType::Wechat),
            _ if s.eq_ignore_ascii_case("unionpay") => Some(PayType::UnionPay),
            _ => None,
        }
    }
}

/// An H5 pay request before signing. Every value goes out as a JSON string;
/// absent optional fields are left out of the body (never `null` or `""`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct H5PayRequest {
    pub inst_no: String,
    pub mch_no: String,
    pub pay_type: PayType,
    pub pay_trace_no: String,
    /// `yyyyMMddHHmmss`; fixed once per identity and reused by every retry.
    pub pay_time: String,
    /// In fen.
    pub total_amount: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub open_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub notify_url: Option<String>,
}

impl H5PayRequest {
    /// The request's fields as the gateway receives them, unsigned.
    pub fn to_params(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |k: &str, v: &str| {
            m.insert(k.to_owned(), Value::String(v.to_owned()));
        };
        put("inst_no", &self.inst_no);
        put("mch_no", &self.mch_no);
        put("pay_type", self.pay_type.code());
        put("pay_trace_no", &self.pay_trace_no);
        put("pay_time", &self.pay_time);
        put("total_amount", &self.total_amount.to_string());
        if let Some(v) = &self.open_id {
            put("open_id", v);
        }
        if let Some(v) = &self.notify_url {
            put("notify_url", v);
        }
        m
    }

    /// The signed JSON body. Built once per identity: retries send these
    /// exact bytes.
    pub fn signed_body(&self, key: &SecretString) -> Vec<u8> {
        signed(self.to_params(), key)
    }
}

/// A queryorder request (gateway-lifecycle.md): by the gateway's order
/// number when known, else by the original pay_trace_no and pay_time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRequest {
    pub inst_no: String,
    pub mch_no: String,
    /// Fresh per query.
    pub query_trace_no: String,
    pub by: QueryBy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryBy {
    TradeNo(String),
    Trace {
        pay_trace_no: String,
        pay_time: String,
    },
}

impl QueryRequest {
    pub fn to_params(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |k: &str, v: &str| {
            m.insert(k.to_owned(), Value::String(v.to_owned()));
        };
        put("inst_no", &self.inst_no);
        put("mch_no", &self.mch_no);
        put("query_trace_no", &self.query_trace_no);
        match &self.by {
            QueryBy::TradeNo(t) => put("trade_no", t),
            QueryBy::Trace {
                pay_trace_no,
                pay_time,
            } => {
                put("pay_trace_no", pay_trace_no);
                put("pay_time", pay_time);
            }
        }
        m
    }

    pub fn signed_body(&self, key: &SecretString) -> Vec<u8> {
        signed(self.to_params(), key)
    }
}

/// A closeorder request: the order by its gateway number; `close_trace_no`
/// and `close_time` chosen once per payment and sent on every retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub inst_no: String,
    pub mch_no: String,
    pub close_trace_no: String,
    /// `yyyyMMddHHmmss`, in the gateway's offset.
    pub close_time: String,
    pub trade_no: String,
}

impl CloseRequest {
    pub fn to_params(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, v) in [
            ("inst_no", &self.inst_no),
            ("mch_no", &self.mch_no),
            ("close_trace_no", &self.close_trace_no),
            ("close_time", &self.close_time),
            ("trade_no", &self.trade_no),
        ] {
            m.insert(k.to_owned(), Value::String(v.clone()));
        }
        m
    }

    pub fn signed_body(&self, key: &SecretString) -> Vec<u8> {
        signed(self.to_params(), key)
    }
}

/// `params` with its sign, as JSON.
fn signed(mut params: Map<String, Value>, key: &SecretString) -> Vec<u8> {
    let s = sign::sign(&params, key);
    params.insert("sign".to_owned(), Value::String(s));
    // A map of strings always serialises.
    serde_json::to_vec(&params).unwrap_or_default()
}

/// The gateway's `result_code` words about a payment, read in this one
/// place by the h5pay, query, close and notify parsers. What a word is
/// evidence of is each parser's: `PAY_SUCCESS` is an order placed in an
/// h5pay answer, a payment in a query answer or a notify, a close in a
/// close answer (contract §10 rule 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultCode {
    PaySuccess,
    PayFail,
    PayInProcess,
}

impl ResultCode {
    /// The word, or `None` for one this vocabulary does not have.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PAY_SUCCESS" => Some(Self::PaySuccess),
            "PAY_FAIL" => Some(Self::PayFail),
            "PAY_IN_PROCESS" => Some(Self::PayInProcess),
            _ => None,
        }
    }
}

/// The `result_code` of a refund notify: never evidence about a payment.
pub const TRADE_REFUND: &str = "TRADE_REFUND";

/// A field of an answer as text (numbers as they were written), `None` if
/// absent or null. The lifecycle's answers are read field by field.
pub fn text(m: &Map<String, Value>, k: &str) -> Option<String> {
    match m.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// A string field that the gateway may also send as a number, or as null.
fn loose_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a string, found {}",
            json_kind(&other)
        ))),
    }
}

/// A one-word name of a JSON value's type, for error messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Every documented response field. All optional: which are present depends
/// on return_code, the channel and the gateway's mood; nulls are tolerated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct H5PayResponse {
    #[serde(default, deserialize_with = "loose_string")]
    pub return_code: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub result_code: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub return_msg: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub pay_type: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub mch_name: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub shop_name: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub mch_no: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub shop_no: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub pay_trace_no: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub pay_time: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub total_amount: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub trade_no: Option<String>,
    #[serde(rename = "appId", default, deserialize_with = "loose_string")]
    pub app_id: Option<String>,
    #[serde(rename = "timeStamp", default, deserialize_with = "loose_string")]
    pub time_stamp: Option<String>,
    #[serde(rename = "nonceStr", default, deserialize_with = "loose_string")]
    pub nonce_str: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub packages: Option<String>,
    #[serde(rename = "signType", default, deserialize_with = "loose_string")]
    pub sign_type: Option<String>,
    #[serde(rename = "paySign", default, deserialize_with = "loose_string")]
    pub pay_sign: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub ali_trade_no: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub attach: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub code_url: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub sign: Option<String>,
}

/// A response as received: the typed view plus every field as sent
/// (unknown ones included), which the signature check needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedResponse {
    pub fields: H5PayResponse,
    pub raw: Map<String, Value>,
}

/// Why a response body is not the documented JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseParseError {
    #[error("response body is not JSON: {0}")]
    NotJson(String),
    #[error("response body is {0}, not a JSON object")]
    NotObject(&'static str),
    #[error("response field {0}")]
    Field(String),
}

impl ReceivedResponse {
    pub fn parse(body: &[u8]) -> Result<Self, ResponseParseError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ResponseParseError::NotJson(e.to_string()))?;
        if !value.is_object() {
            return Err(ResponseParseError::NotObject(json_kind(&value)));
        }
        // Deserialising from a reference: the map is kept, not copied.
        let fields = H5PayResponse::deserialize(&value).map_err(|e| {
            // serde names the field in its message only for some errors; find it ourselves.
            let name = value
                .as_object()
                .and_then(|m| {
                    m.iter().find(|(k, v)| {
                        matches!(v, Value::Bool(_) | Value::Array(_) | Value::Object(_))
                            && (KNOWN_FIELDS.contains(&k.as_str())
                                || JSAPI_FIELDS.contains(&k.as_str()))
                    })
                })
                .map(|(k, _)| k.clone())
                .unwrap_or_default();
            ResponseParseError::Field(format!("{name}: {e}"))
        })?;
        match value {
            Value::Object(raw) => Ok(ReceivedResponse { fields, raw }),
            other => Err(ResponseParseError::NotObject(json_kind(&other))),
        }
    }
}

/// The JSAPI parameters of a WeChat h5pay answer: one list for the parser,
/// the message-kind check and the sandbox, so they cannot drift apart.
pub const JSAPI_FIELDS: [&str; 6] = [
    "appId",
    "timeStamp",
    "nonceStr",
    "packages",
    "signType",
    "paySign",
];

/// Known fields besides [`JSAPI_FIELDS`].
const KNOWN_FIELDS: &[&str] = &[
    "return_code",
    "result_code",
    "return_msg",
    "pay_type",
    "mch_name",
    "shop_name",
    "mch_no",
    "shop_no",
    "pay_trace_no",
    "pay_time",
    "total_amount",
    "trade_no",
    "ali_trade_no",
    "attach",
    "code_url",
    "sign",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pay_type_reads_codes_and_names_in_any_case() {
        assert_eq!(PayType::parse("400"), Some(PayType::Wechat));
        assert_eq!(PayType::parse("WeChat"), Some(PayType::Wechat));
        assert_eq!(PayType::parse("ALIPAY"), Some(PayType::Alipay));
        assert_eq!(PayType::parse("unionpay"), Some(PayType::UnionPay));
        assert_eq!(PayType::parse("500"), None);
        assert_eq!(PayType::parse(" 400"), None);
        assert_eq!(PayType::parse(""), None);
    }

    #[test]
    fn request_body_has_string_values_and_omits_absent_optionals() {
        let req = H5PayRequest {
            inst_no: "60000001".into(),
            mch_no: "Y52212190001".into(),
            pay_type: PayType::Wechat,
            pay_trace_no: "998877665544332018".into(),
            pay_time: "20230306235318".into(),
            total_amount: 1,
            open_id: None,
            notify_url: None,
        };
        let body: Value = serde_json::from_slice(
            &req.signed_body(&SecretString::from("sandbox-key-5f2b9c0e7d1a4b3c")),
        )
        .unwrap_or_default();
        assert_eq!(
            body,
            serde_json::json!({
                "inst_no": "60000001", "mch_no": "Y52212190001", "pay_time": "20230306235318",
                "pay_trace_no": "998877665544332018", "pay_type": "400", "total_amount": "1",
                "sign": "801c30aa3f7f50bda58dbf57aa17f732"
            })
        );
    }

    #[test]
    fn the_seed_response_parses_with_nulls_and_keeps_unknown_fields() {
        let body = br#"{"return_code":"SUCCESS","result_code":"PAY_SUCCESS","appId":null,
            "timeStamp":1414561699123,"total_amount":1,"x_new":"kept","sign":"00"}"#;
        let r = ReceivedResponse::parse(body).expect("parses");
        assert_eq!(r.fields.return_code.as_deref(), Some("SUCCESS"));
        assert_eq!(r.fields.app_id, None);
        assert_eq!(r.fields.time_stamp.as_deref(), Some("1414561699123"));
        assert_eq!(r.fields.total_amount.as_deref(), Some("1"));
        assert_eq!(r.raw.get("x_new"), Some(&Value::String("kept".into())));
    }

    #[test]
    fn malformed_responses_say_what_is_wrong() {
        assert!(matches!(
            ReceivedResponse::parse(b"<html>"),
            Err(ResponseParseError::NotJson(_))
        ));
        assert_eq!(
            ReceivedResponse::parse(b"[1]"),
            Err(ResponseParseError::NotObject("an array"))
        );
        let e = ReceivedResponse::parse(br#"{"return_code":{"a":1}}"#).err();
        assert!(
            matches!(&e, Some(ResponseParseError::Field(m)) if m.starts_with("return_code")),
            "{e:?}"
        );
    }
}
