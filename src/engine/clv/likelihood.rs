//! The negative log-likelihoods the fits minimise, with their analytic gradients, on the logs of
//! the parameters, over data prepared once: rows put in one canonical order (so the sums, and the
//! fit, do not depend on the order the rows came in), the gamma-function terms computed once per
//! distinct count, and for BG/NBD the logarithms once per distinct time. The sums over rows run on
//! every core, in fixed chunks added in order, so the bits do not depend on the number of cores.

use statrs::function::gamma::{digamma, ln_gamma};

use crate::engine::clv::bgnbd::History;

/// A negative log-likelihood over log-parameters, and how many customers it sums over.
pub trait NegLogLikelihood {
    /// The number of parameters.
    fn dims(&self) -> usize;
    /// The customers (the sum of the weights).
    fn customers(&self) -> f64;
    /// The total negative log-likelihood at the log-parameters `theta`, and its gradient in them.
    fn value_and_gradient(&self, theta: &[f64]) -> (f64, Vec<f64>);
}

/// Distinct values and, for each input, the index of its value.
fn index_values(values: &[f64]) -> (Vec<f64>, Vec<u32>) {
    let mut distinct = values.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    let index = values
        .iter()
        .map(|v| distinct.binary_search_by(|d| d.total_cmp(v)).unwrap_or(0) as u32)
        .collect();
    (distinct, index)
}

/// One BG/NBD history by index: its count, its t_x and T among the distinct times, its weight.
#[derive(Debug, Clone, Copy)]
struct BgNbdRow {
    x: u32,
    t_x: u32,
    t: u32,
    weight: f64,
}

/// Weighted (x, t_x, T) histories, indexed for BG/NBD (equation 6 of Fader, Hardie & Lee 2005).
#[derive(Debug)]
pub struct BgNbdData {
    counts: Vec<f64>,
    count_weights: Vec<f64>,
    times: Vec<f64>,
    rows: Vec<BgNbdRow>,
    customers: f64,
}

impl BgNbdData {
    /// Index checked histories (weights are counts).
    pub fn new(data: &[(History, f64)]) -> Self {
        let mut sorted: Vec<(History, f64)> = data.to_vec();
        sorted.sort_by(|(p, _), (q, _)| {
            (p.x.total_cmp(&q.x))
                .then(p.t_x.total_cmp(&q.t_x))
                .then(p.t.total_cmp(&q.t))
        });
        let xs: Vec<f64> = sorted.iter().map(|(h, _)| h.x).collect();
        let (counts, x_index) = index_values(&xs);
        let all_times: Vec<f64> = sorted.iter().flat_map(|(h, _)| [h.t_x, h.t]).collect();
        let (times, time_index) = index_values(&all_times);
        let mut count_weights = vec![0.0; counts.len()];
        let rows = sorted
            .iter()
            .enumerate()
            .map(|(i, (_, w))| {
                count_weights[x_index[i] as usize] += w;
                BgNbdRow {
                    x: x_index[i],
                    t_x: time_index[2 * i],
                    t: time_index[2 * i + 1],
                    weight: *w,
                }
            })
            .collect();
        let customers = sorted.iter().map(|(_, w)| w).sum();
        BgNbdData {
            counts,
            count_weights,
            times,
            rows,
            customers,
        }
    }

    /// The mean T, a scale for alpha's starting points.
    pub fn mean_t(&self) -> f64 {
        let total: f64 = self
            .rows
            .iter()
            .map(|r| self.times[r.t as usize] * r.weight)
            .sum();
        total / self.customers
    }

    /// Σ over the distinct counts of the weight times the gamma-function terms, and their
    /// gradient in (r, alpha, a, b).
    fn count_terms(&self, [r, alpha, a, b]: [f64; 4]) -> (f64, [f64; 4]) {
        let (mut value, mut grad) = (0.0, [0.0; 4]);
        let (ln_alpha, psi_r) = (alpha.ln(), digamma(r));
        let mut beta = BetaRatio::new(a, b);
        for (x, w) in self.counts.iter().zip(&self.count_weights) {
            let (ln_ratio, d_a, d_b) = beta.at(*x);
            value += w * (ln_gamma(r + x) - ln_gamma(r) + r * ln_alpha + ln_ratio);
            grad[0] += w * (digamma(r + x) - psi_r + ln_alpha);
            grad[1] += w * r / alpha;
            grad[2] += w * d_a;
            grad[3] += w * d_b;
        }
        (value, grad)
    }

    /// Σ over the rows of the weight times the timing term (alive through T, or dropped out after
    /// t_x), and its gradient in (r, alpha, a, b).
    fn timing_terms(&self, [r, alpha, a, b]: [f64; 4]) -> (f64, [f64; 4]) {
        let ln_times: Vec<f64> = self.times.iter().map(|t| (alpha + t).ln()).collect();
        let inv_times: Vec<f64> = self.times.iter().map(|t| 1.0 / (alpha + t)).collect();
        // Per count: ln of the odds a / (b + x - 1) of dropping out after the last purchase.
        let ln_odds: Vec<f64> = self
            .counts
            .iter()
            .map(|x| a.ln() - (b + x - 1.0).ln())
            .collect();
        let inv_bx: Vec<f64> = self.counts.iter().map(|x| 1.0 / (b + x - 1.0)).collect();
        let inv_a = 1.0 / a;
        sum_in_chunks(&self.rows, |rows| {
            let (mut value, mut grad) = (0.0, [0.0; 4]);
            for row in rows {
                let x = self.counts[row.x as usize];
                let c = r + x;
                let (ln_t, inv_t) = (ln_times[row.t as usize], inv_times[row.t as usize]);
                let alive = -c * ln_t;
                if x == 0.0 {
                    value += row.weight * alive;
                    grad[0] -= row.weight * ln_t;
                    grad[1] -= row.weight * c * inv_t;
                    continue;
                }
                let (ln_tx, inv_tx) = (ln_times[row.t_x as usize], inv_times[row.t_x as usize]);
                let dropped = ln_odds[row.x as usize] - c * ln_tx;
                // ln(e^alive + e^dropped), and the share of each.
                let (hi, lo) = if alive >= dropped {
                    (alive, dropped)
                } else {
                    (dropped, alive)
                };
                let e = (lo - hi).exp();
                let share_lo = e / (1.0 + e);
                let w_drop = if alive >= dropped {
                    share_lo
                } else {
                    1.0 - share_lo
                };
                let w_alive = 1.0 - w_drop;
                value += row.weight * (hi + e.ln_1p());
                grad[0] -= row.weight * (w_alive * ln_t + w_drop * ln_tx);
                grad[1] -= row.weight * c * (w_alive * inv_t + w_drop * inv_tx);
                grad[2] += row.weight * w_drop * inv_a;
                grad[3] -= row.weight * w_drop * inv_bx[row.x as usize];
            }
            (value, grad)
        })
    }
}

/// Rows per chunk of the parallel sums.
const CHUNK_ROWS: usize = 1 << 15;

/// Σ of `term` over `rows`, cut into fixed chunks summed on every core and added in chunk order:
/// the same bits whatever the number of cores.
fn sum_in_chunks<R: Sync, const N: usize>(
    rows: &[R],
    term: impl Fn(&[R]) -> (f64, [f64; N]) + Sync,
) -> (f64, [f64; N]) {
    let chunks: Vec<&[R]> = rows.chunks(CHUNK_ROWS).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(chunks.len());
    let sums: Vec<(f64, [f64; N])> = if threads <= 1 {
        chunks.iter().map(|c| term(c)).collect()
    } else {
        let mut by_chunk = vec![(0.0, [0.0; N]); chunks.len()];
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let (chunks, term) = (&chunks, &term);
                    scope.spawn(move || {
                        (t..chunks.len())
                            .step_by(threads)
                            .map(|i| (i, term(chunks[i])))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for worker in workers {
                for (i, sum) in worker.join().expect("a likelihood chunk panicked") {
                    by_chunk[i] = sum;
                }
            }
        });
        by_chunk
    };
    sums.into_iter()
        .fold((0.0, [0.0; N]), |(v, mut g), (cv, cg)| {
            for i in 0..N {
                g[i] += cg[i];
            }
            (v + cv, g)
        })
}

/// ln B(a, b + x) / B(a, b) = −Σ_{k<x} ln(1 + a / (b + k)) and its derivatives in a and b, for
/// counts x in increasing order: the sums run on from the previous count, and never subtract two
/// large ln Γ (which loses everything when the fit heads to a → 0, b → ∞: no dropout).
/// A count that is not a whole number falls back to ln Γ and ψ.
struct BetaRatio {
    a: f64,
    b: f64,
    k: f64,
    sums: (f64, f64, f64),
}

impl BetaRatio {
    fn new(a: f64, b: f64) -> Self {
        BetaRatio {
            a,
            b,
            k: 0.0,
            sums: (0.0, 0.0, 0.0),
        }
    }

    fn at(&mut self, x: f64) -> (f64, f64, f64) {
        let (a, b) = (self.a, self.b);
        if x.fract() != 0.0 || x < self.k {
            let value = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
            let d_a = digamma(a + b) - digamma(a + b + x);
            return (value, d_a, d_a + digamma(b + x) - digamma(b));
        }
        while self.k < x {
            let (bk, abk) = (b + self.k, a + b + self.k);
            self.sums.0 -= (a / bk).ln_1p();
            self.sums.1 -= 1.0 / abk;
            self.sums.2 += a / (bk * abk);
            self.k += 1.0;
        }
        self.sums
    }
}

impl NegLogLikelihood for BgNbdData {
    fn dims(&self) -> usize {
        4
    }

    fn customers(&self) -> f64 {
        self.customers
    }

    fn value_and_gradient(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let p = [
            theta[0].exp(),
            theta[1].exp(),
            theta[2].exp(),
            theta[3].exp(),
        ];
        let (count_value, count_grad) = self.count_terms(p);
        let (timing_value, timing_grad) = self.timing_terms(p);
        // d/dθ = φ d/dφ for φ = e^θ; negated, as this is minimised.
        let grad = (0..4)
            .map(|i| -p[i] * (count_grad[i] + timing_grad[i]))
            .collect();
        (-(count_value + timing_value), grad)
    }
}

/// One Gamma-Gamma customer by index: its count, ln m, x·m, and weight.
#[derive(Debug, Clone, Copy)]
struct GammaGammaRow {
    x: u32,
    ln_m: f64,
    total: f64,
    weight: f64,
}

/// Weighted (x, m) of repeat customers, indexed for Gamma-Gamma.
#[derive(Debug)]
pub struct GammaGammaData {
    counts: Vec<f64>,
    count_weights: Vec<f64>,
    rows: Vec<GammaGammaRow>,
    customers: f64,
}

impl GammaGammaData {
    /// Index checked (x > 0, m > 0, weight) rows.
    pub fn new(data: &[(f64, f64, f64)]) -> Self {
        let mut sorted = data.to_vec();
        sorted.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.total_cmp(&q.1)));
        let xs: Vec<f64> = sorted.iter().map(|(x, _, _)| *x).collect();
        let (counts, x_index) = index_values(&xs);
        let mut count_weights = vec![0.0; counts.len()];
        let rows = sorted
            .iter()
            .zip(x_index)
            .map(|((x, m, w), i)| {
                count_weights[i as usize] += w;
                GammaGammaRow {
                    x: i,
                    ln_m: m.ln(),
                    total: x * m,
                    weight: *w,
                }
            })
            .collect();
        let customers = sorted.iter().map(|(_, _, w)| w).sum();
        GammaGammaData {
            counts,
            count_weights,
            rows,
            customers,
        }
    }

    /// The mean of m, a scale for gamma's starting points.
    pub fn mean_value(&self) -> f64 {
        let total: f64 = self
            .rows
            .iter()
            .map(|r| r.total / self.counts[r.x as usize] * r.weight)
            .sum();
        total / self.customers
    }
}

impl NegLogLikelihood for GammaGammaData {
    fn dims(&self) -> usize {
        3
    }

    fn customers(&self) -> f64 {
        self.customers
    }

    fn value_and_gradient(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let [p, q, gamma] = [theta[0].exp(), theta[1].exp(), theta[2].exp()];
        let (mut value, mut grad) = (0.0, [0.0; 3]);
        let (ln_gamma_scale, psi_q) = (gamma.ln(), digamma(q));
        for (x, w) in self.counts.iter().zip(&self.count_weights) {
            let (px, psi_pxq) = (p * x, digamma(p * x + q));
            value += w
                * (ln_gamma(px + q) - ln_gamma(px) - ln_gamma(q)
                    + q * ln_gamma_scale
                    + px * x.ln());
            grad[0] += w * x * (psi_pxq - digamma(px) + x.ln());
            grad[1] += w * (psi_pxq - psi_q + ln_gamma_scale);
            grad[2] += w * q / gamma;
        }
        let (row_value, row_grad) = sum_in_chunks(&self.rows, |rows| {
            let (mut value, mut grad) = (0.0, [0.0; 3]);
            for row in rows {
                let x = self.counts[row.x as usize];
                let ln_spend = (row.total + gamma).ln();
                value += row.weight * ((p * x - 1.0) * row.ln_m - (p * x + q) * ln_spend);
                grad[0] += row.weight * x * (row.ln_m - ln_spend);
                grad[1] -= row.weight * ln_spend;
                grad[2] -= row.weight * (p * x + q) / (row.total + gamma);
            }
            (value, grad)
        });
        value += row_value;
        for i in 0..3 {
            grad[i] += row_grad[i];
        }
        let phi = [p, q, gamma];
        let grad = (0..3).map(|i| -phi[i] * grad[i]).collect();
        (-value, grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::clv::bgnbd::BgNbd;
    use crate::engine::clv::gamma_gamma::GammaGamma;

    fn h(x: f64, t_x: f64, t: f64) -> History {
        History { x, t_x, t }
    }

    /// The value at `theta` is minus the model's total log-likelihood `want`, within `tolerance`
    /// of it (relative).
    fn assert_value_is_minus(f: &impl NegLogLikelihood, theta: &[f64], want: f64, tolerance: f64) {
        let (got, _) = f.value_and_gradient(theta);
        assert!(
            (got + want).abs() < tolerance * want.abs(),
            "{got} vs {}",
            -want
        );
    }

    /// The gradient agrees with central differences of the value, component by component.
    fn assert_gradient_matches_differences(f: &impl NegLogLikelihood, theta: &[f64]) {
        let (_, grad) = f.value_and_gradient(theta);
        for i in 0..theta.len() {
            let step = 1e-6;
            let mut up = theta.to_vec();
            up[i] += step;
            let mut down = theta.to_vec();
            down[i] -= step;
            let numeric =
                (f.value_and_gradient(&up).0 - f.value_and_gradient(&down).0) / (2.0 * step);
            assert!(
                (grad[i] - numeric).abs() < 1e-6 * numeric.abs().max(1.0),
                "component {i}: analytic {}, numeric {numeric}",
                grad[i]
            );
        }
    }

    #[test]
    fn bgnbd_value_is_the_models_log_likelihood_and_the_gradient_its_derivative() {
        let data = [
            (h(0.0, 0.0, 30.0), 3.0),
            (h(2.0, 10.5, 30.0), 1.0),
            (h(1.0, 29.0, 30.0), 2.0),
            (h(7.0, 3.0, 12.0), 1.0),
            (h(2.0, 10.5, 30.0), 4.0),
        ];
        let prepared = BgNbdData::new(&data);
        assert_eq!(prepared.customers(), 11.0);
        let m = BgNbd {
            r: 0.4,
            alpha: 6.0,
            a: 0.9,
            b: 2.2,
        };
        let theta = [m.r.ln(), m.alpha.ln(), m.a.ln(), m.b.ln()];
        let want: f64 = data.iter().map(|(h, w)| w * m.log_likelihood(h)).sum();
        assert_value_is_minus(&prepared, &theta, want, 1e-12);
        assert_gradient_matches_differences(&prepared, &theta);
        // A dropout-dominated point, where the dropped-out term is the larger.
        assert_gradient_matches_differences(&prepared, &[0.5, 0.2, 1.5, -1.0]);
    }

    #[test]
    fn the_beta_ratio_runs_on_and_survives_a_huge_b() {
        let (a, b) = (0.8, 2.4);
        let mut beta = BetaRatio::new(a, b);
        for x in [0.0, 1.0, 2.0, 7.0, 30.0] {
            let want = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
            let want_a = digamma(a + b) - digamma(a + b + x);
            let want_b = want_a + digamma(b + x) - digamma(b);
            let (got, got_a, got_b) = beta.at(x);
            assert!((got - want).abs() < 1e-12, "x {x}: {got} vs {want}");
            assert!((got_a - want_a).abs() < 1e-12 && (got_b - want_b).abs() < 1e-12);
        }
        // A fractional count, and one below the last, take ln Γ.
        let (half, _, _) = beta.at(2.5);
        let want = ln_gamma(a + b) + ln_gamma(b + 2.5) - ln_gamma(b) - ln_gamma(a + b + 2.5);
        assert!((half - want).abs() < 1e-12);
        // a = 1e-9, b = 1e8 (the no-dropout limit): ln(1 + a/b) ≈ a/b per purchase, 1e-17,
        // which a difference of ln Γ near 1.7e9 cannot resolve at all.
        let (value, _, d_b) = BetaRatio::new(1e-9, 1e8).at(3.0);
        assert!((value / -3e-17 - 1.0).abs() < 1e-6, "{value}");
        assert!((d_b / 3e-25 - 1.0).abs() < 1e-6, "{d_b}");
    }

    #[test]
    fn sums_over_many_chunks_are_the_models_log_likelihood() {
        let data: Vec<(History, f64)> = (0..100_000u32)
            .map(|i| {
                let x = f64::from(i % 9);
                let t = 30.0 + f64::from(i % 400) / 7.0;
                let t_x = if x == 0.0 {
                    0.0
                } else {
                    t * f64::from(i % 5) / 5.0
                };
                (h(x, t_x, t), f64::from(1 + i % 3))
            })
            .collect();
        let prepared = BgNbdData::new(&data);
        assert!(prepared.rows.len() > 3 * CHUNK_ROWS);
        let m = BgNbd {
            r: 0.6,
            alpha: 11.0,
            a: 0.5,
            b: 3.1,
        };
        let want: f64 = data.iter().map(|(h, w)| w * m.log_likelihood(h)).sum();
        let theta = [m.r.ln(), m.alpha.ln(), m.a.ln(), m.b.ln()];
        assert_value_is_minus(&prepared, &theta, want, 1e-10);
    }

    #[test]
    fn row_order_does_not_change_a_bit() {
        let data: Vec<(History, f64)> = (0..200)
            .map(|i| {
                (
                    h(
                        f64::from(i % 7),
                        f64::from(i % 11),
                        20.0 + f64::from(i % 13),
                    ),
                    1.0,
                )
            })
            .collect();
        let mut reversed = data.clone();
        reversed.reverse();
        let theta = [-0.3, 1.2, -0.5, 0.8];
        let one = BgNbdData::new(&data).value_and_gradient(&theta);
        let other = BgNbdData::new(&reversed).value_and_gradient(&theta);
        assert_eq!(one, other);
    }

    #[test]
    fn gamma_gamma_value_is_the_models_log_likelihood_and_the_gradient_its_derivative() {
        let data = [
            (1.0, 20.0, 2.0),
            (3.0, 35.5, 1.0),
            (1.0, 7.25, 1.0),
            (6.0, 12.0, 3.0),
        ];
        let prepared = GammaGammaData::new(&data);
        let g = GammaGamma {
            p: 4.0,
            q: 3.0,
            gamma: 12.0,
        };
        let theta = [g.p.ln(), g.q.ln(), g.gamma.ln()];
        let want: f64 = data
            .iter()
            .map(|(x, m, w)| w * g.log_likelihood(*x, *m))
            .sum();
        assert_value_is_minus(&prepared, &theta, want, 1e-12);
        assert_gradient_matches_differences(&prepared, &theta);
        assert!((prepared.mean_value() - (40.0 + 35.5 + 7.25 + 36.0) / 7.0).abs() < 1e-12);
    }
}
