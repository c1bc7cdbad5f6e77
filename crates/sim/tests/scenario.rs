//! The scenario reader's strictness and the writer's round trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use drainguard_model::{Amount, EventKind, Stage};
use drainguard_sim::{Label, Record, ScenarioError, ScenarioReader, ScenarioWriter};

fn read(text: &str) -> Result<Vec<Record>, ScenarioError> {
    ScenarioReader::new(text.as_bytes()).collect()
}

fn err_of(text: &str) -> (usize, Option<String>, String) {
    let e = read(text).expect_err("should fail");
    (e.line(), e.field().map(str::to_string), e.to_string())
}

const GOOD: &str = r#"{"t":"2023-09-12T00:00:00Z","kind":"wallet","chain":"ethereum","address":"0xAA","name":"hot-1","balances":{"ETH":"5000","USDT":"1000000.5"}}
{"t":"2023-09-12T00:00:00Z","kind":"wallet","chain":"ethereum","address":"0xCC","name":"cold","role":"cold"}
{"t":"2023-09-12T00:00:00Z","kind":"price","asset":"ETH","usd":1600.5}
{"t":"2023-09-12T00:00:01+00:00","kind":"balance","chain":"ethereum","wallet":"0xaa","asset":"ETH","amount":"4999.9"}
{"t":"2023-09-12T00:00:02.25Z","kind":"intent","id":"w1","chain":"ethereum","wallet":"0xaa","to":"0xdd","asset":"ETH","amount":"1.5","label":"normal"}
{"t":"2023-09-12T00:00:03Z","kind":"transfer","chain":"ethereum","tx_hash":"0x01","index":0,"stage":"pending","from":"0xaa","to":"0xdd","asset":"ETH","amount":"1.5","label":"normal"}
{"t":"2023-09-12T00:00:15Z","kind":"transfer","chain":"ethereum","tx_hash":"0x01","index":0,"stage":"included","block":100,"from":"0xaa","to":"0xdd","asset":"USDT","token":"0xdac1","amount":"1.5"}
{"t":"2023-09-12T00:00:16Z","kind":"approval","chain":"ethereum","tx_hash":"0x02","owner":"0xaa","spender":"0xee","asset":"USDT","amount":"115792089237316195423570985008687907853269984665640564039457584007913129639935","standard":"permit","label":"attack"}
{"t":"2023-09-12T00:00:17Z","kind":"admin","chain":"ethereum","tx_hash":"0x03","wallet":"0xaa","action":"enable_module","target":"0xff"}
{"t":"2023-09-12T00:00:17Z","kind":"head","chain":"solana","block":101,"hash":"0xbeef"}
"#;

#[test]
fn reads_every_kind() {
    let records = read(GOOD).unwrap();
    assert_eq!(records.len(), 10);
    let EventKind::Wallet(w) = &records[0].kind else {
        panic!("wallet")
    };
    assert_eq!(w.address.as_str(), "0xaa");
    assert_eq!(w.balances.len(), 2);
    assert_eq!(
        w.balances[1].amount,
        Amount::parse_decimal("1000000.5", 18).unwrap()
    );
    let EventKind::Transfer(t) = &records[5].kind else {
        panic!("transfer")
    };
    assert_eq!(t.stage, Stage::Pending);
    assert_eq!(t.block, None);
    assert_eq!(records[5].label, Some(Label::Normal));
    let EventKind::Approval(a) = &records[7].kind else {
        panic!("approval")
    };
    assert_eq!(a.amount, Amount::MAX);
    assert_eq!(records[7].label, Some(Label::Attack));
    assert!(matches!(records[9].kind, EventKind::Head(_)));
}

#[test]
fn writer_round_trips() {
    let records = read(GOOD).unwrap();
    let mut w = ScenarioWriter::new(Vec::new());
    for r in &records {
        w.write(r).unwrap();
    }
    let text = String::from_utf8(w.finish().unwrap()).unwrap();
    assert_eq!(read(&text).unwrap(), records);
}

#[test]
fn errors_name_the_line_and_the_field() {
    let head = |extra: &str| {
        format!(
            "{{\"t\":\"2023-09-12T00:00:00Z\",\"kind\":\"head\",\"chain\":\"e\",\"block\":1,\"hash\":\"h\"{extra}}}\n"
        )
    };
    let ok = head("");
    let cases: Vec<(String, usize, Option<&str>, &str)> = vec![
        (format!("{ok}{}", head(",\"extra\":1")), 2, Some("extra"), "unknown field"),
        (format!("{ok}{ok}{{\"t\":\"2023-09-12T00:00:00Z\",\"kind\":\"teleport\"}}\n"), 3, Some("kind"), "unknown kind"),
        ("{\"t\":\"2023-09-12T00:00:00Z\",\"kind\":\"head\",\"chain\":\"e\",\"hash\":\"h\"}\n".into(), 1, Some("block"), "missing"),
        ("{\"t\":\"2023-09-12T00:00:00Z\",\"kind\":\"price\",\"asset\":\"ETH\",\"usd\":-1}\n".into(), 1, Some("usd"), "non-negative"),
        ("{\"t\":\"12 Sept\",\"kind\":\"price\",\"asset\":\"ETH\",\"usd\":1}\n".into(), 1, Some("t"), "RFC 3339"),
        ("{\"t\":\"2023-09-12T00:00:00Z\",\"kind\":\"balance\",\"chain\":\"e\",\"wallet\":\"w\",\"asset\":\"ETH\",\"amount\":\"1e3\"}\n".into(), 1, Some("amount"), "invalid character"),
        ("{\"t\":\"2023-09-12T00:00:00Z\",\"kind\":\"balance\",\"chain\":\"e\",\"wallet\":\"w\",\"asset\":\"ETH\",\"amount\":\"0.1234567890123456789\"}\n".into(), 1, Some("amount"), "fractional digits"),
        ("{\"t\":\"2023-09-12T00:00:00Z\",\"kind\":\"balance\",\"chain\":\"e\",\"wallet\":\"w\",\"asset\":\"ETH\",\"amount\":5}\n".into(), 1, Some("amount"), "expected a string"),
        ("{\"t\":\"2023-09-12T00:00:00Z\",\"kind\":\"transfer\",\"chain\":\"e\",\"tx_hash\":\"0x1\",\"index\":0,\"stage\":\"included\",\"from\":\"a\",\"to\":\"b\",\"asset\":\"ETH\",\"amount\":\"1\"}\n".into(), 1, Some("block"), "required for stage included"),
        ("{\"t\":\"2023-09-12T00:00:00Z\",\"kind\":\"transfer\",\"chain\":\"e\",\"tx_hash\":\"0x1\",\"index\":-1,\"stage\":\"pending\",\"from\":\"a\",\"to\":\"b\",\"asset\":\"ETH\",\"amount\":\"1\"}\n".into(), 1, Some("index"), "non-negative integer"),
        ("{\"t\":\"2023-09-12T00:00:00Z\",\"kind\":\"transfer\",\"chain\":\"e\",\"tx_hash\":\"0x1\",\"index\":0,\"stage\":\"mined\",\"from\":\"a\",\"to\":\"b\",\"asset\":\"ETH\",\"amount\":\"1\"}\n".into(), 1, Some("stage"), "not one of"),
        ("{\"t\":\"2023-09-12T00:00:00Z\",\"kind\":\"approval\",\"chain\":\"e\",\"tx_hash\":\"0x1\",\"owner\":\"a\",\"spender\":\"b\",\"asset\":\"USDT\",\"amount\":\"1.5\"}\n".into(), 1, Some("amount"), "integer"),
        ("{\"t\":\"2023-09-12T00:00:00Z\",\"kind\":\"head\",\"chain\":\"e\",\"block\":1,\"hash\":\"h\",\"label\":\"attack\"}\n".into(), 1, Some("label"), "unknown field"),
        ("{\"t\":\"2023-09-12T00:00:00Z\",\"kind\":\"admin\",\"chain\":\"e\",\"tx_hash\":\"0x1\",\"wallet\":\"a\",\"action\":\"steal\",\"target\":\"b\"}\n".into(), 1, Some("action"), "not one of"),
        ("{\"t\":\"2023-09-12T00:00:00Z\",\"kind\":\"wallet\",\"chain\":\"e\",\"address\":\"a\",\"name\":\"n\",\"balances\":{\"ETH\":\"x\"}}\n".into(), 1, Some("balances.ETH"), "invalid character"),
        ("{\"t\":\"2023-09-12T00:00:00Z\",\"kind\":\"wallet\",\"chain\":\"\",\"address\":\"a\",\"name\":\"n\"}\n".into(), 1, Some("chain"), "empty"),
        (format!("{ok}not json\n"), 2, None, "not valid JSON"),
        (format!("{ok}[1,2]\n"), 2, None, "expected a JSON object"),
        (format!("{ok}\n{ok}"), 2, None, "blank line"),
        (format!("{}{ok}", head("").replace("00:00:00", "00:00:05")), 2, Some("t"), "earlier"),
    ];
    for (text, line, field, needle) in cases {
        let (l, f, msg) = err_of(&text);
        assert_eq!(l, line, "{msg}");
        assert_eq!(f.as_deref(), field, "{msg}");
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
        assert!(msg.starts_with(&format!("line {line}")), "{msg}");
    }
}

#[test]
fn stops_after_the_first_error_and_accepts_a_final_newline() {
    let text = "{\"bad\":1}\n{\"t\":\"2023-09-12T00:00:00Z\",\"kind\":\"head\",\"chain\":\"e\",\"block\":1,\"hash\":\"h\"}\n";
    let items: Vec<_> = ScenarioReader::new(text.as_bytes()).collect();
    assert_eq!(items.len(), 1);
    assert!(items[0].is_err());
    assert_eq!(read("").unwrap().len(), 0);
}
