//! The fake remote-write upstream: records every request and answers what the test says.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{HttpServer, Reply, Request};

pub struct FakeUpstream {
    pub server: HttpServer,
    reply: Arc<Mutex<Reply>>,
    requests: Arc<Mutex<Vec<Request>>>,
    count: Arc<AtomicUsize>,
}

impl FakeUpstream {
    /// Answers 204 to everything and records every request.
    pub fn start() -> FakeUpstream {
        let reply = Arc::new(Mutex::new(Reply::status(204)));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (r2, q2, c2) = (reply.clone(), requests.clone(), count.clone());
        let server = HttpServer::start(Arc::new(move |req: &Request| {
            q2.lock().unwrap().push(req.clone());
            c2.fetch_add(1, Ordering::SeqCst);
            r2.lock().unwrap().clone()
        }));
        FakeUpstream {
            server,
            reply,
            requests,
            count,
        }
    }
    pub fn set_reply(&self, r: Reply) {
        *self.reply.lock().unwrap() = r;
    }
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.server.addr())
    }
}
