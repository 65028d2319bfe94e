//! The wire types of `POST /api/openpay/v3/h5pay`, as the gateway's own
//! document (`docs/gateway-h5pay.md`) describes them, and the requests of
//! queryorder and closeorder (`docs/gateway-lifecycle.md`).

use secrecy::SecretString;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::object::{Field, Object, ObjectError};
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
    /// A WeChat request of merchant `M1` of the sandbox's institution
    /// `60000001`: the one request of the tests and fuzz targets.
    #[doc(hidden)]
    pub fn example(pay_trace_no: &str, total_amount: u64) -> Self {
        H5PayRequest {
            inst_no: "60000001".into(),
            mch_no: "M1".into(),
            pay_type: PayType::Wechat,
            pay_trace_no: pay_trace_no.into(),
            pay_time: "20261126101500".into(),
            total_amount,
            open_id: None,
            notify_url: None,
        }
    }

    /// The request's fields as the gateway receives them, unsigned.
    pub fn to_params(&self) -> Map<String, Value> {
        params([
            ("inst_no", Some(self.inst_no.as_str())),
            ("mch_no", Some(&self.mch_no)),
            ("pay_type", Some(self.pay_type.code())),
            ("pay_trace_no", Some(&self.pay_trace_no)),
            ("pay_time", Some(&self.pay_time)),
            ("total_amount", Some(&self.total_amount.to_string())),
            ("open_id", self.open_id.as_deref()),
            ("notify_url", self.notify_url.as_deref()),
        ])
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
        let (trade_no, pay_trace_no, pay_time) = match &self.by {
            QueryBy::TradeNo(t) => (Some(t.as_str()), None, None),
            QueryBy::Trace {
                pay_trace_no,
                pay_time,
            } => (None, Some(pay_trace_no.as_str()), Some(pay_time.as_str())),
        };
        params([
            ("inst_no", Some(self.inst_no.as_str())),
            ("mch_no", Some(&self.mch_no)),
            ("query_trace_no", Some(&self.query_trace_no)),
            ("trade_no", trade_no),
            ("pay_trace_no", pay_trace_no),
            ("pay_time", pay_time),
        ])
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
        params([
            ("inst_no", Some(self.inst_no.as_str())),
            ("mch_no", Some(&self.mch_no)),
            ("close_trace_no", Some(&self.close_trace_no)),
            ("close_time", Some(&self.close_time)),
            ("trade_no", Some(&self.trade_no)),
        ])
    }

    pub fn signed_body(&self, key: &SecretString) -> Vec<u8> {
        signed(self.to_params(), key)
    }
}

/// A request's fields, every value a JSON string; an absent optional one
/// is left out (never `null` or `""`).
fn params<const N: usize>(fields: [(&str, Option<&str>); N]) -> Map<String, Value> {
    fields
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_owned(), Value::String(v?.to_owned()))))
        .collect()
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct H5PayResponse {
    pub return_code: Option<String>,
    pub result_code: Option<String>,
    pub return_msg: Option<String>,
    pub pay_type: Option<String>,
    pub mch_name: Option<String>,
    pub shop_name: Option<String>,
    pub mch_no: Option<String>,
    pub shop_no: Option<String>,
    pub pay_trace_no: Option<String>,
    pub pay_time: Option<String>,
    pub total_amount: Option<String>,
    pub trade_no: Option<String>,
    pub app_id: Option<String>,
    pub time_stamp: Option<String>,
    pub nonce_str: Option<String>,
    pub packages: Option<String>,
    pub sign_type: Option<String>,
    pub pay_sign: Option<String>,
    pub ali_trade_no: Option<String>,
    pub attach: Option<String>,
    pub code_url: Option<String>,
    pub sign: Option<String>,
}

impl H5PayResponse {
    /// Reads the documented fields of an answer: each a string, a number
    /// (kept as its text) or null. Unknown fields are passed over here
    /// (the object keeps them for the sign). Read straight from the
    /// object, not through serde: one pass, no copy of a value that is not
    /// kept.
    fn read(o: &Object<'_>) -> Result<Self, ResponseParseError> {
        let mut f = H5PayResponse::default();
        for (k, v) in o.iter() {
            let Some(slot) = f.slot(k) else {
                continue;
            };
            *slot = match v {
                Field::Null => None,
                Field::Str(s) => Some(s.to_string()),
                Field::Num(n) => Some(n.to_string()),
                Field::Other(kind) => {
                    return Err(ResponseParseError::Field(format!(
                        "{k}: expected a string, found {kind}"
                    )));
                }
            };
        }
        Ok(f)
    }

    /// The field named `k` on the wire.
    fn slot(&mut self, k: &str) -> Option<&mut Option<String>> {
        Some(match k {
            "return_code" => &mut self.return_code,
            "result_code" => &mut self.result_code,
            "return_msg" => &mut self.return_msg,
            "pay_type" => &mut self.pay_type,
            "mch_name" => &mut self.mch_name,
            "shop_name" => &mut self.shop_name,
            "mch_no" => &mut self.mch_no,
            "shop_no" => &mut self.shop_no,
            "pay_trace_no" => &mut self.pay_trace_no,
            "pay_time" => &mut self.pay_time,
            "total_amount" => &mut self.total_amount,
            "trade_no" => &mut self.trade_no,
            "appId" => &mut self.app_id,
            "timeStamp" => &mut self.time_stamp,
            "nonceStr" => &mut self.nonce_str,
            "packages" => &mut self.packages,
            "signType" => &mut self.sign_type,
            "paySign" => &mut self.pay_sign,
            "ali_trade_no" => &mut self.ali_trade_no,
            "attach" => &mut self.attach,
            "code_url" => &mut self.code_url,
            "sign" => &mut self.sign,
            _ => return None,
        })
    }
}

/// A response as received: the typed view plus every field as sent
/// (unknown ones included), which the signature check needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedResponse<'a> {
    pub fields: H5PayResponse,
    /// Every field as received, for the sign.
    pub raw: Object<'a>,
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

impl<'a> ReceivedResponse<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, ResponseParseError> {
        let raw = Object::parse(body).map_err(|e| match e {
            ObjectError::NotJson(e) => ResponseParseError::NotJson(e),
            ObjectError::NotObject(kind) => ResponseParseError::NotObject(kind),
        })?;
        Ok(ReceivedResponse {
            fields: H5PayResponse::read(&raw)?,
            raw,
        })
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
        assert_eq!(r.raw.text("x_new").as_deref(), Some("kept"));
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
