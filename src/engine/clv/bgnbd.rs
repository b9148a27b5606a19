//! BG/NBD (Fader, Hardie & Lee 2005): purchases while alive are Poisson with a gamma(r, alpha)
//! rate across customers; after each purchase a customer drops out with a beta(a, b)
//! probability. A customer is summarised by (x, t_x, T): repeat purchases, the time of the last
//! one and the time since the first purchase, in one time unit (alpha is in that unit).

use statrs::function::gamma::ln_gamma;

use crate::engine::clv::hyp2f1::ln_hyp2f1;

/// A customer's purchase history, in the model's time unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct History {
    /// Repeat purchases (purchase days after the first).
    pub x: f64,
    /// Time of the last purchase since the first (0 when x = 0).
    pub t_x: f64,
    /// Time since the first purchase (the observation length).
    pub t: f64,
}

impl History {
    /// A history the model can score: x >= 0, 0 <= t_x <= T, finite.
    pub fn check(&self) -> Result<(), String> {
        let History { x, t_x, t } = *self;
        if !(x.is_finite() && t_x.is_finite() && t.is_finite()) {
            return Err(format!("non-finite history (x={x}, t_x={t_x}, T={t})"));
        }
        if x < 0.0 || t_x < 0.0 {
            return Err(format!(
                "frequency and recency must be >= 0 (x={x}, t_x={t_x})"
            ));
        }
        if t_x > t {
            return Err(format!("recency {t_x} is after T {t}"));
        }
        Ok(())
    }
}

/// Fitted BG/NBD parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbd {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

impl BgNbd {
    /// The log-likelihood of one customer (equation 6 of the paper).
    pub fn log_likelihood(&self, h: &History) -> f64 {
        self.ln_count_terms(h.x) + self.ln_timing_term(h)
    }

    /// The part of the log-likelihood that depends on the count x alone (the gamma functions).
    pub fn ln_count_terms(&self, x: f64) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln() + ln_gamma(a + b) + ln_gamma(b + x)
            - ln_gamma(b)
            - ln_gamma(a + b + x)
    }

    /// The rest: alive through T, or dropped out after the purchase at t_x.
    pub fn ln_timing_term(&self, h: &History) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let History { x, t_x, t } = *h;
        let alive = -(r + x) * (alpha + t).ln();
        if x == 0.0 {
            return alive;
        }
        let dropped = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + t_x).ln();
        log_add_exp(alive, dropped)
    }

    /// P(alive | x, t_x, T): 1 for a customer who never repeated.
    pub fn p_alive(&self, h: &History) -> f64 {
        if h.x == 0.0 {
            return 1.0;
        }
        let BgNbd { r, alpha, a, b } = *self;
        let ln_odds =
            a.ln() - (b + h.x - 1.0).ln() + (r + h.x) * ((alpha + h.t).ln() - (alpha + h.t_x).ln());
        1.0 / (1.0 + ln_odds.exp())
    }

    /// E[X(t)]: purchases of a new customer in `t` time units (needs a > 1).
    pub fn expected_purchases_new(&self, t: f64) -> Option<f64> {
        let BgNbd { r, alpha, a, b } = *self;
        if a <= 1.0 || t < 0.0 {
            return None;
        }
        let z = t / (alpha + t);
        let ln_f = ln_hyp2f1(r, b, a + b - 1.0, z)?;
        let scaled = (r * (alpha / (alpha + t)).ln() + ln_f).exp();
        Some((a + b - 1.0) / (a - 1.0) * (1.0 - scaled))
    }

    /// E[Y(t) | x, t_x, T]: purchases in the next `t` time units (equation 10).
    pub fn expected_purchases(&self, h: &History, t: f64) -> Option<f64> {
        let BgNbd { r, alpha, a, b } = *self;
        let History { x, t_x, t: big_t } = *h;
        if t < 0.0 || (a - 1.0).abs() < 1e-12 {
            return None;
        }
        if t == 0.0 {
            return Some(0.0);
        }
        let z = t / (alpha + big_t + t);
        let ln_f = ln_hyp2f1(r + x, b + x, a + b + x - 1.0, z)?;
        let scaled = ((r + x) * ((alpha + big_t) / (alpha + big_t + t)).ln() + ln_f).exp();
        let numerator = (a + b + x - 1.0) / (a - 1.0) * (1.0 - scaled);
        let denominator = if x > 0.0 {
            1.0 + a / (b + x - 1.0) * ((r + x) * ((alpha + big_t).ln() - (alpha + t_x).ln())).exp()
        } else {
            1.0
        };
        Some(numerator / denominator)
    }
}

/// ln(e^p + e^q) without overflow.
fn log_add_exp(p: f64, q: f64) -> f64 {
    let m = p.max(q);
    m + ((p - m).exp() + (q - m).exp()).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper's CDNOW estimates, in weeks.
    const CDNOW: BgNbd = BgNbd {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };

    fn h(x: f64, t_x: f64, t: f64) -> History {
        History { x, t_x, t }
    }

    #[test]
    fn log_likelihood_by_hand() {
        // x = 0: ln[Γ(r+0)/Γ(r) α^r] + ln[Γ(a+b)Γ(b)/(Γ(b)Γ(a+b))] - r ln(α+T) = r ln α - r ln(α+T).
        let m = BgNbd {
            r: 0.5,
            alpha: 2.0,
            a: 1.5,
            b: 3.0,
        };
        let got = m.log_likelihood(&h(0.0, 0.0, 10.0));
        assert!((got - (0.5 * 2f64.ln() - 0.5 * 12f64.ln())).abs() < 1e-12);
        // x = 1, t_x = 4, T = 10: Γ(1.5)/Γ(0.5) = 0.5; B(a, b+1)/B(a, b) = b/(a+b) = 3/4.5.
        let alive = 12f64.powf(-1.5);
        let dropped = 1.5 / 3.0 * 6f64.powf(-1.5);
        let want = (0.5f64).ln() + 0.5 * 2f64.ln() + (3.0f64 / 4.5).ln() + (alive + dropped).ln();
        assert!((m.log_likelihood(&h(1.0, 4.0, 10.0)) - want).abs() < 1e-12);
    }

    #[test]
    fn p_alive_is_one_without_repeats_and_grows_with_recency() {
        assert_eq!(CDNOW.p_alive(&h(0.0, 0.0, 30.0)), 1.0);
        let mut last = 0.0;
        for t_x in [1.0, 5.0, 10.0, 20.0, 30.0] {
            let p = CDNOW.p_alive(&h(3.0, t_x, 30.0));
            assert!(p > last && p <= 1.0, "t_x {t_x}: {p}");
            last = p;
        }
        // A purchase at the very end: alive with the probability of not dropping right away,
        // the odds being a / (b + x - 1).
        let p = CDNOW.p_alive(&h(3.0, 30.0, 30.0));
        assert!((p - 1.0 / (1.0 + 0.793 / (2.426 + 2.0))).abs() < 1e-12);
    }

    #[test]
    fn the_papers_example_customer() {
        // Fader, Hardie & Lee (2005), section 5: x = 2, t_x = 30.43, T = 38.86 expects 1.226
        // purchases in the next 39 weeks.
        let e = CDNOW
            .expected_purchases(&h(2.0, 30.43, 38.86), 39.0)
            .unwrap();
        assert!((e - 1.226).abs() < 0.005, "{e}");
        // More recent, more expected; no time, nothing.
        let older = CDNOW
            .expected_purchases(&h(2.0, 10.0, 38.86), 39.0)
            .unwrap();
        assert!(older < e);
        assert_eq!(
            CDNOW.expected_purchases(&h(2.0, 30.43, 38.86), 0.0),
            Some(0.0)
        );
    }

    #[test]
    fn a_new_customer_needs_a_above_one() {
        assert_eq!(CDNOW.expected_purchases_new(39.0), None);
        let m = BgNbd { a: 1.8, ..CDNOW };
        let e1 = m.expected_purchases_new(10.0).unwrap();
        let e2 = m.expected_purchases_new(20.0).unwrap();
        assert!(e1 > 0.0 && e2 > e1);
    }

    #[test]
    fn bad_histories_are_named() {
        assert!(h(-1.0, 0.0, 3.0).check().unwrap_err().contains(">= 0"));
        assert!(h(1.0, 4.0, 3.0).check().unwrap_err().contains("after T"));
        assert!(h(1.0, 2.0, f64::NAN).check().is_err());
        assert!(h(1.0, 2.0, 3.0).check().is_ok());
    }
}
