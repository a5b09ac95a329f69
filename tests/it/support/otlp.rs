//! An OTLP/HTTP trace receiver for the tests: `POST /v1/traces` with a
//! protobuf `ExportTraceServiceRequest`, decoded with the official
//! `opentelemetry-proto` types and kept as [`Received`] spans. It can be
//! stopped (the collector down) and answers like a collector: 200 with an
//! empty `ExportTraceServiceResponse`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

/// One span as the collector got it; ids in lowercase hex.
#[derive(Clone, Debug)]
pub struct Received {
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    /// 1 internal, 2 server, 3 client (the protobuf's SpanKind).
    pub kind: i32,
    pub attributes: BTreeMap<String, String>,
    /// (trace id, span id, the link's attributes)
    pub links: Vec<(String, String, BTreeMap<String, String>)>,
    /// 0 unset, 1 ok, 2 error.
    pub status: i32,
}

impl Received {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

pub struct Receiver {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    requests: Arc<Mutex<u64>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text(kv.value.as_ref()))).collect()
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let requests: Arc<Mutex<u64>> = Arc::default();
        let down: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let (kept, count, is_down) = (spans.clone(), requests.clone(), down.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (kept, count, is_down) = (kept.clone(), count.clone(), is_down.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (kept, count, is_down) = (kept.clone(), count.clone(), is_down.clone());
                        async move {
                            // Down: a kept-alive connection breaks instead of answering.
                            if is_down.load(std::sync::atomic::Ordering::SeqCst) {
                                return Err("the collector is down");
                            }
                            assert_eq!(req.uri().path(), "/v1/traces");
                            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let export = ExportTraceServiceRequest::decode(body).expect("a protobuf export");
                            *count.lock().unwrap() += 1;
                            let mut out = kept.lock().unwrap();
                            for rs in export.resource_spans {
                                let service = rs
                                    .resource
                                    .as_ref()
                                    .map(|r| attributes(&r.attributes))
                                    .and_then(|a| a.get("service.name").cloned())
                                    .unwrap_or_default();
                                for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                                    out.push(Received {
                                        service: service.clone(),
                                        trace_id: hex::encode(&span.trace_id),
                                        span_id: hex::encode(&span.span_id),
                                        parent_span_id: hex::encode(&span.parent_span_id),
                                        name: span.name.clone(),
                                        kind: span.kind,
                                        attributes: attributes(&span.attributes),
                                        links: span
                                            .links
                                            .iter()
                                            .map(|l| {
                                                (
                                                    hex::encode(&l.trace_id),
                                                    hex::encode(&l.span_id),
                                                    attributes(&l.attributes),
                                                )
                                            })
                                            .collect(),
                                        status: span.status.as_ref().map_or(0, |s| s.code),
                                    });
                                }
                            }
                            let answer = ExportTraceServiceResponse::default().encode_to_vec();
                            let resp = http::Response::builder()
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::from(answer)))
                                .unwrap();
                            Ok::<_, &'static str>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, spans, requests, down, task }
    }

    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// Export requests received.
    pub fn exports(&self) -> u64 {
        *self.requests.lock().unwrap()
    }

    /// Waits until a span matching `f` has arrived.
    pub async fn wait_for(&self, what: &str, f: impl Fn(&Received) -> bool) -> Received {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.spans().into_iter().find(|s| f(s)) {
                return s;
            }
            assert!(Instant::now() < deadline, "no span {what}; got {:#?}", self.spans());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The collector goes down: the port stops accepting and open
    /// connections break.
    pub fn stop(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.abort();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
