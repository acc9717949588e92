//! What the transport tests share: the settings of a websocketd listening on
//! 127.0.0.1:8080 (routed, its own origins, 64 KiB messages).

use std::sync::Arc;

use websocketd::http::Policy;
use websocketd::site::{Origins, Site};
use websocketd::ws::{MessageType, Settings};

pub fn settings(message_type: MessageType, max_unanswered_pings: u32) -> Arc<Settings> {
    Arc::new(Settings {
        policy: Policy {
            fixed_service: None,
            site: Site {
                listeners: vec![([127, 0, 0, 1], 8080).into()],
                public: Vec::new(),
                any_host: false,
                origins: Origins::Own,
                tls: false,
            },
            subprotocols: Vec::new(),
            static_dir: None,
        },
        message_type,
        max_message_size: 1 << 16,
        max_unanswered_pings,
    })
}
