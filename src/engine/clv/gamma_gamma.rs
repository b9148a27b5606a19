//! Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV"): a customer's purchases have a gamma(p,
//! nu) value around their own mean, and nu is gamma(q, gamma) across customers. Fitted on repeat
//! customers from x (repeat purchases) and m (their mean value); it needs m > 0.

use statrs::function::gamma::ln_gamma;

/// Fitted Gamma-Gamma parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGamma {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

impl GammaGamma {
    /// The log-likelihood of one repeat customer with `x` purchases of mean value `m` (> 0).
    pub fn log_likelihood(&self, x: f64, m: f64) -> f64 {
        self.ln_count_terms(x) + self.ln_value_terms(x, m)
    }

    /// The part of the log-likelihood that depends on x alone (the gamma functions).
    pub fn ln_count_terms(&self, x: f64) -> f64 {
        let GammaGamma { p, q, gamma } = *self;
        ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q) + q * gamma.ln() + p * x * x.ln()
    }

    /// The rest, which depends on the mean value m.
    pub fn ln_value_terms(&self, x: f64, m: f64) -> f64 {
        let GammaGamma { p, q, gamma } = *self;
        (p * x - 1.0) * m.ln() - (p * x + q) * (x * m + gamma).ln()
    }

    /// E[M | x, m]: the expected value of a customer's future purchases, shrunk from their own
    /// mean toward the population's by how few purchases it rests on. With x = 0 it is the
    /// population mean p * gamma / (q - 1), which needs q > 1.
    pub fn expected_value(&self, x: f64, m: f64) -> Option<f64> {
        let GammaGamma { p, q, gamma } = *self;
        let denominator = p * x + q - 1.0;
        if denominator <= 0.0 {
            return None;
        }
        Some(p * (gamma + x * m) / denominator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CDNOW: GammaGamma = GammaGamma {
        p: 6.25,
        q: 3.74,
        gamma: 15.44,
    };

    #[test]
    fn log_likelihood_by_hand() {
        // p = 1, q = 2, gamma = 3, x = 1, m = 2: ln Γ(3) - ln Γ(1) - ln Γ(2) + 2 ln 3 + 0 + 0 - 3 ln 5.
        let m = GammaGamma {
            p: 1.0,
            q: 2.0,
            gamma: 3.0,
        };
        let want = 2f64.ln() + 2.0 * 3f64.ln() - 3.0 * 5f64.ln();
        assert!((m.log_likelihood(1.0, 2.0) - want).abs() < 1e-12);
    }

    #[test]
    fn expected_value_shrinks_to_the_population_mean() {
        let population = CDNOW.expected_value(0.0, 0.0).unwrap();
        assert!((population - 6.25 * 15.44 / 2.74).abs() < 1e-9);
        // One purchase of 100 is pulled far toward the mean; twenty of 100 barely.
        let one = CDNOW.expected_value(1.0, 100.0).unwrap();
        let many = CDNOW.expected_value(20.0, 100.0).unwrap();
        assert!(population < one && one < many && many < 100.0);
        let no_mean = GammaGamma { q: 0.5, ..CDNOW };
        assert_eq!(no_mean.expected_value(0.0, 0.0), None);
    }
}
