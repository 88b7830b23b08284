//! Token usage and what it costs: counted per model call by the model proxy, summed per turn,
//! per session (by model and by conversation), priced from a built-in table of Claude models
//! that config `pricing` can override.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Tokens of one call, or a sum of calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Tokens {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens
    }

    fn add(&mut self, o: &Tokens) {
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cache_read_tokens += o.cache_read_tokens;
        self.cache_write_tokens += o.cache_write_tokens;
    }
}

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

impl Price {
    const fn new(input: f64, output: f64) -> Self {
        // Anthropic's ratios: a cache read costs a tenth of input, a (5-minute) write 1.25×.
        Self { input, output, cache_read: input / 10.0, cache_write: input * 1.25 }
    }

    pub fn cost(&self, t: &Tokens) -> f64 {
        (t.input_tokens as f64 * self.input
            + t.output_tokens as f64 * self.output
            + t.cache_read_tokens as f64 * self.cache_read
            + t.cache_write_tokens as f64 * self.cache_write)
            / 1_000_000.0
    }
}

/// Anthropic's list prices (USD per million tokens), by model id prefix; dated ids
/// (`claude-sonnet-4-5-20250929`) and aliases (`claude-sonnet-4-5`) both match.
const BUILT_IN: &[(&str, Price)] = &[
    ("claude-opus-4-5", Price::new(5.0, 25.0)),
    ("claude-opus-4-1", Price::new(15.0, 75.0)),
    ("claude-opus-4", Price::new(15.0, 75.0)),
    ("claude-sonnet-4-5", Price::new(3.0, 15.0)),
    ("claude-sonnet-4", Price::new(3.0, 15.0)),
    ("claude-3-7-sonnet", Price::new(3.0, 15.0)),
    ("claude-3-5-sonnet", Price::new(3.0, 15.0)),
    ("claude-haiku-4-5", Price::new(1.0, 5.0)),
    ("claude-3-5-haiku", Price::new(0.8, 4.0)),
    ("claude-3-haiku", Price::new(0.25, 1.25)),
    ("claude-3-opus", Price::new(15.0, 75.0)),
];

/// The price list in use: config `pricing` entries first (exact id or prefix), then the table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pricing {
    overrides: Vec<(String, Price)>,
}

impl Pricing {
    pub fn with_overrides(overrides: BTreeMap<String, Price>) -> Self {
        let mut overrides: Vec<_> = overrides.into_iter().collect();
        // Longest first, so the most specific entry wins.
        overrides.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
        Self { overrides }
    }

    pub fn price(&self, model: &str) -> Option<Price> {
        let model = model.strip_prefix("anthropic/").unwrap_or(model);
        self.overrides
            .iter()
            .map(|(k, p)| (k.as_str(), *p))
            .chain(BUILT_IN.iter().copied())
            .find(|(prefix, _)| model.starts_with(prefix))
            .map(|(_, p)| p)
    }
}

/// One model call as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    pub model: String,
    /// `main`, or the subagent the call was made for.
    pub conversation_id: String,
    #[serde(flatten)]
    pub tokens: Tokens,
    /// `null` for a model the price list does not know.
    pub cost_usd: Option<f64>,
}

/// Tokens and cost of a group of calls. Cost is `null` once any call in it had no price.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Sum {
    #[serde(flatten)]
    pub tokens: Tokens,
    pub cost_usd: Option<f64>,
    pub calls: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unpriced: bool,
}

impl Sum {
    pub fn add(&mut self, call: &Call) {
        self.tokens.add(&call.tokens);
        self.calls += 1;
        match call.cost_usd {
            Some(c) if !self.unpriced => self.cost_usd = Some(self.cost_usd.unwrap_or(0.0) + c),
            _ => {
                self.unpriced = true;
                self.cost_usd = None;
            }
        }
    }

    /// What the cost counts toward a budget: priced calls only.
    pub fn cost_or_zero(&self) -> f64 {
        self.cost_usd.unwrap_or(0.0)
    }
}

/// A session's usage, kept across reloads (in the session record's metadata).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SessionUsage {
    #[serde(flatten)]
    pub total: Sum,
    /// Lifetime of the session's sandboxes that have ended (the running one is added live).
    pub sandbox_seconds: f64,
    pub by_model: BTreeMap<String, Sum>,
    pub by_conversation: BTreeMap<String, Sum>,
}

impl SessionUsage {
    pub fn add(&mut self, call: &Call) {
        self.total.add(call);
        self.by_model.entry(call.model.clone()).or_default().add(call);
        self.by_conversation.entry(call.conversation_id.clone()).or_default().add(call);
    }
}

/// Limits on what a session may spend (runtime `budget`, or `sessionOptions.budget`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Budget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turn_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sandbox_seconds: Option<f64>,
}

impl Budget {
    /// Every limit set must be a positive finite number; the error names it.
    pub fn validated(self, at: &str) -> Result<Self, String> {
        for (name, v) in [
            ("maxCostUsd", self.max_cost_usd),
            ("maxTokens", self.max_tokens),
            ("maxTurnMs", self.max_turn_ms),
            ("maxSandboxSeconds", self.max_sandbox_seconds),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!("{at}.{name} must be a positive number, got {v}"));
                }
            }
        }
        Ok(self)
    }

    /// `self`'s limits, with `defaults` where `self` sets none.
    pub fn over(self, defaults: Budget) -> Budget {
        Budget {
            max_cost_usd: self.max_cost_usd.or(defaults.max_cost_usd),
            max_tokens: self.max_tokens.or(defaults.max_tokens),
            max_turn_ms: self.max_turn_ms.or(defaults.max_turn_ms),
            max_sandbox_seconds: self.max_sandbox_seconds.or(defaults.max_sandbox_seconds),
        }
    }

    /// The spending limit `used` (and `sandbox_seconds` of sandbox lifetime) has reached, named
    /// with the amounts (`None`: within budget).
    pub fn exceeded(&self, used: &Sum, sandbox_seconds: f64) -> Option<String> {
        if let Some(max) = self.max_sandbox_seconds {
            if sandbox_seconds >= max {
                return Some(format!("maxSandboxSeconds {max} reached: {sandbox_seconds:.0} s of sandbox time used"));
            }
        }
        if let Some(max) = self.max_cost_usd {
            if used.cost_or_zero() >= max {
                return Some(format!("maxCostUsd {max} reached: ${:.6} used", used.cost_or_zero()));
            }
        }
        if let Some(max) = self.max_tokens {
            if used.tokens.total() as f64 >= max {
                return Some(format!("maxTokens {max} reached: {} tokens used", used.tokens.total()));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(model: &str, input: u64, output: u64, pricing: &Pricing) -> Call {
        let tokens = Tokens { input_tokens: input, output_tokens: output, ..Default::default() };
        Call {
            model: model.into(),
            conversation_id: "main".into(),
            cost_usd: pricing.price(model).map(|p| p.cost(&tokens)),
            tokens,
        }
    }

    #[test]
    fn dated_ids_aliases_and_overrides_are_priced() {
        let p = Pricing::default();
        assert_eq!(p.price("claude-sonnet-4-5-20250929"), Some(Price::new(3.0, 15.0)));
        assert_eq!(p.price("claude-opus-4-1-20250805").unwrap().output, 75.0);
        assert_eq!(p.price("claude-opus-4-5").unwrap().output, 25.0, "the more specific prefix wins");
        assert_eq!(p.price("anthropic/claude-haiku-4-5").unwrap().input, 1.0);
        assert_eq!(p.price("gpt-5"), None);
        let custom = Price { input: 1.0, output: 2.0, cache_read: 0.0, cache_write: 0.0 };
        let p = Pricing::with_overrides([("claude-sonnet-4-5".to_string(), custom)].into());
        assert_eq!(p.price("claude-sonnet-4-5-20250929"), Some(custom));
        let t =
            Tokens { input_tokens: 1_000_000, output_tokens: 2_000_000, cache_read_tokens: 10, cache_write_tokens: 0 };
        assert_eq!(custom.cost(&t), 5.0);
    }

    #[test]
    fn sums_by_model_and_conversation_and_unknown_models_cost_null() {
        let p = Pricing::default();
        let mut u = SessionUsage::default();
        u.add(&call("claude-sonnet-4-5", 1000, 100, &p));
        u.add(&call("claude-haiku-4-5", 2000, 0, &p));
        assert_eq!(u.total.tokens.input_tokens, 3000);
        let cost = u.total.cost_usd.unwrap();
        assert!((cost - (0.003 + 0.0015 + 0.002)).abs() < 1e-12, "{cost}");
        assert_eq!(u.by_model.len(), 2);
        u.add(&call("mystery-model", 10, 10, &p));
        assert_eq!(u.total.cost_usd, None);
        assert!(u.total.unpriced);
        assert_eq!(u.by_model["claude-sonnet-4-5"].calls, 1);
        let back: SessionUsage = serde_json::from_value(serde_json::to_value(&u).unwrap()).unwrap();
        assert_eq!(back, u, "kept across reloads as JSON");
    }
}
