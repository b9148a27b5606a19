//! Maximum-likelihood fits of BG/NBD and Gamma-Gamma: Nelder-Mead (argmin) on the logs of the
//! parameters, so every parameter stays positive, from several starting points; the best is
//! kept, and it counts as converged only when the simplex shrank within the iteration limit and
//! the starts that converged agree on the likelihood. Rows are weighted: distinct histories with
//! their counts fit exactly as the customers one by one, with far fewer rows.

use argmin::core::{CostFunction, Executor, State, TerminationReason, TerminationStatus};
use argmin::solver::neldermead::NelderMead;

use crate::engine::clv::bgnbd::{BgNbd, History};
use crate::engine::clv::gamma_gamma::GammaGamma;

/// The most Nelder-Mead iterations per start.
const MAX_ITERS: u64 = 4_000;
/// Nelder-Mead stops when the simplex's costs (mean negative log-likelihood per customer) agree
/// to this standard deviation.
const SD_TOLERANCE: f64 = 1e-12;

/// What a fit found.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted<P> {
    pub params: P,
    pub log_likelihood: f64,
    /// Customers the fit saw (the sum of the weights).
    pub customers: f64,
    pub converged: bool,
    /// Iterations of the best start.
    pub iterations: u64,
    /// Asymptotic standard errors of the parameters (in their order), from the inverse of the
    /// observed information (the numerical Hessian of the negative log-likelihood) at the
    /// optimum; None when it is not positive definite (a flat or boundary optimum).
    pub standard_errors: Option<Vec<f64>>,
}

/// Why a fit could not run.
#[derive(Debug, Clone, PartialEq)]
pub enum FitError {
    /// No customer to fit on.
    Empty,
    /// The data cannot identify the model (e.g. nobody ever repeated).
    Degenerate(String),
    /// A history or value the model cannot take.
    BadInput(String),
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FitError::Empty => f.write_str("no customers to fit on"),
            FitError::Degenerate(m) | FitError::BadInput(m) => f.write_str(m),
        }
    }
}

/// Negative log-likelihood over log-parameters.
struct Objective<'a, F: Fn(&[f64]) -> f64>(&'a F);

impl<F: Fn(&[f64]) -> f64> CostFunction for Objective<'_, F> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        let v = (self.0)(p);
        // A step into a region the model cannot take is simply very unlikely.
        Ok(if v.is_finite() { v } else { f64::MAX / 4.0 })
    }
}

/// Minimise `neg_ll` (on log-parameters) from each start and report the best point as `model`
/// gives it, fitted on `customers`.
fn fit<P, F: Fn(&[f64]) -> f64>(
    neg_ll: F,
    starts: &[Vec<f64>],
    model: impl Fn(&[f64]) -> P,
    customers: f64,
) -> Fitted<P> {
    // Minimised per customer, so that the simplex's tolerance means the same at 2,000 customers
    // as at 5 million (an absolute tolerance on a total of -1e7 is never met).
    let per_customer = |p: &[f64]| neg_ll(p) / customers;
    let (p, cost, iterations, converged) = minimise(&per_customer, starts);
    let standard_errors = standard_errors(&neg_ll, &p);
    Fitted {
        params: model(&p),
        log_likelihood: -cost * customers,
        customers,
        converged,
        iterations,
        standard_errors,
    }
}

/// Standard errors of exp(θ) at the optimum θ of `neg_ll` (on log-parameters): the inverse
/// Hessian's diagonal by central differences, mapped by the delta method (exact at an optimum,
/// where the gradient vanishes: se(φ) = φ · se(θ)).
fn standard_errors<F: Fn(&[f64]) -> f64>(neg_ll: &F, theta: &[f64]) -> Option<Vec<f64>> {
    const H: f64 = 1e-3;
    let n = theta.len();
    let at = |steps: &[(usize, f64)]| {
        let mut p = theta.to_vec();
        for (i, d) in steps {
            p[*i] += d;
        }
        neg_ll(&p)
    };
    let centre = at(&[]);
    let entry = |i: usize, j: usize| {
        if i == j {
            (at(&[(i, H)]) - 2.0 * centre + at(&[(i, -H)])) / (H * H)
        } else {
            (at(&[(i, H), (j, H)]) - at(&[(i, H), (j, -H)]) - at(&[(i, -H), (j, H)])
                + at(&[(i, -H), (j, -H)]))
                / (4.0 * H * H)
        }
    };
    let hessian: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| entry(i, j)).collect())
        .collect();
    let variances = inverse_diagonal(&hessian)?;
    let se: Vec<f64> = theta
        .iter()
        .zip(variances)
        .map(|(t, v)| t.exp() * v.sqrt())
        .collect();
    se.iter().all(|s| s.is_finite()).then_some(se)
}

/// The diagonal of the inverse of a symmetric positive definite matrix (Cholesky); None when it
/// is not positive definite. Indexed loops: the textbook recurrences, read as written.
#[allow(clippy::needless_range_loop)]
fn inverse_diagonal(m: &[Vec<f64>]) -> Option<Vec<f64>> {
    let n = m.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = m[i][i] - s;
                if d.is_nan() || d <= 0.0 {
                    return None;
                }
                l[i][i] = d.sqrt();
            } else {
                l[i][j] = (m[i][j] - s) / l[j][j];
            }
        }
    }
    // (M^-1)_kk = |L^-1 e_k|^2: solve L y = e_k by forward substitution.
    let diagonal = (0..n)
        .map(|k| {
            let mut y = vec![0.0; n];
            for i in k..n {
                let s: f64 = (k..i).map(|j| l[i][j] * y[j]).sum();
                y[i] = (if i == k { 1.0 } else { 0.0 } - s) / l[i][i];
            }
            y.iter().map(|v| v * v).sum()
        })
        .collect();
    Some(diagonal)
}

/// Minimise `neg_ll` (on log-parameters) from each start; the best point, its value, iterations,
/// and whether it converged.
fn minimise<F: Fn(&[f64]) -> f64>(neg_ll: &F, starts: &[Vec<f64>]) -> (Vec<f64>, f64, u64, bool) {
    let mut best: Option<(Vec<f64>, f64, u64, bool)> = None;
    let mut converged_costs = Vec::new();
    for start in starts {
        let simplex: Vec<Vec<f64>> = std::iter::once(start.clone())
            .chain((0..start.len()).map(|i| {
                let mut v = start.clone();
                v[i] += 0.5;
                v
            }))
            .collect();
        let Ok(solver) = NelderMead::new(simplex).with_sd_tolerance(SD_TOLERANCE) else {
            continue;
        };
        let Ok(res) = Executor::new(Objective(neg_ll), solver)
            .configure(|s| s.max_iters(MAX_ITERS))
            .run()
        else {
            continue;
        };
        let state = res.state();
        let (Some(p), cost) = (state.get_best_param().cloned(), state.get_best_cost()) else {
            continue;
        };
        let converged = matches!(
            state.get_termination_status(),
            TerminationStatus::Terminated(TerminationReason::SolverConverged)
        );
        if converged {
            converged_costs.push(cost);
        }
        if best.as_ref().is_none_or(|b| cost < b.1) {
            best = Some((p, cost, state.get_iter(), converged));
        }
    }
    let (p, cost, iters, converged) = best.unwrap_or((starts[0].clone(), f64::NAN, 0, false));
    // Converged starts that disagree on the optimum mean a flat or multi-modal likelihood.
    let agree = converged_costs
        .iter()
        .filter(|c| (**c - cost).abs() <= 1e-6 * cost.abs().max(1.0))
        .count()
        >= 2.min(converged_costs.len());
    (p, cost, iters, converged && cost.is_finite() && agree)
}

/// The total weight of each distinct value: the likelihood's gamma-function terms depend on a
/// customer's count alone, so they are computed once per count, not once per customer.
fn weights_by_value(values: impl Iterator<Item = (f64, f64)>) -> Vec<(f64, f64)> {
    let mut by: std::collections::BTreeMap<u64, f64> = Default::default();
    for (v, w) in values {
        *by.entry(v.to_bits()).or_insert(0.0) += w;
    }
    by.into_iter()
        .map(|(b, w)| (f64::from_bits(b), w))
        .collect()
}

/// Fit BG/NBD on weighted histories.
pub fn fit_bgnbd(data: &[(History, f64)]) -> Result<Fitted<BgNbd>, FitError> {
    let customers: f64 = data.iter().map(|(_, w)| w).sum();
    if customers <= 0.0 {
        return Err(FitError::Empty);
    }
    for (h, w) in data {
        h.check().map_err(FitError::BadInput)?;
        if !(w.is_finite() && *w >= 0.0) {
            return Err(FitError::BadInput(format!("weight {w} is not a count")));
        }
    }
    if data.iter().all(|(h, _)| h.x == 0.0) {
        return Err(FitError::Degenerate(
            "no customer ever repeated: BG/NBD cannot tell purchase rate from dropout".into(),
        ));
    }
    let model = |p: &[f64]| BgNbd {
        r: p[0].exp(),
        alpha: p[1].exp(),
        a: p[2].exp(),
        b: p[3].exp(),
    };
    let by_x = weights_by_value(data.iter().map(|(h, w)| (h.x, *w)));
    let neg_ll = |p: &[f64]| {
        let m = model(p);
        let per_x: f64 = by_x.iter().map(|(x, w)| w * m.ln_count_terms(*x)).sum();
        let per_row: f64 = data.iter().map(|(h, w)| w * m.ln_timing_term(h)).sum();
        -(per_x + per_row)
    };
    // Starts around the scale of the data: alpha near the mean observation length.
    let mean_t = data.iter().map(|(h, w)| h.t * w).sum::<f64>() / customers;
    let ln_t = mean_t.max(1e-3).ln();
    let starts = [
        vec![0.0, ln_t, 0.0, 0.0],
        vec![(0.3f64).ln(), ln_t - 2.0, (0.8f64).ln(), (2.5f64).ln()],
        vec![(2.0f64).ln(), ln_t + 1.0, (2.0f64).ln(), (5.0f64).ln()],
    ];
    Ok(fit(neg_ll, &starts, model, customers))
}

/// Fit Gamma-Gamma on weighted (x, m) of repeat customers: x > 0 purchases of mean value m > 0.
pub fn fit_gamma_gamma(data: &[(f64, f64, f64)]) -> Result<Fitted<GammaGamma>, FitError> {
    let customers: f64 = data.iter().map(|(_, _, w)| w).sum();
    if customers <= 0.0 {
        return Err(FitError::Empty);
    }
    for (x, m, _) in data {
        if !(*x > 0.0 && *m > 0.0 && x.is_finite() && m.is_finite()) {
            return Err(FitError::BadInput(format!(
                "Gamma-Gamma needs x > 0 repeat purchases of a positive mean value (x={x}, m={m})"
            )));
        }
    }
    let model = |p: &[f64]| GammaGamma {
        p: p[0].exp(),
        q: p[1].exp(),
        gamma: p[2].exp(),
    };
    let by_x = weights_by_value(data.iter().map(|(x, _, w)| (*x, *w)));
    let neg_ll = |p: &[f64]| {
        let g = model(p);
        let per_x: f64 = by_x.iter().map(|(x, w)| w * g.ln_count_terms(*x)).sum();
        let per_row: f64 = data
            .iter()
            .map(|(x, m, w)| w * g.ln_value_terms(*x, *m))
            .sum();
        -(per_x + per_row)
    };
    let mean_m = data.iter().map(|(_, m, w)| m * w).sum::<f64>() / customers;
    let ln_m = mean_m.ln();
    let starts = [
        vec![0.0, 0.0, ln_m],
        vec![(5.0f64).ln(), (3.0f64).ln(), ln_m],
        vec![(2.0f64).ln(), (10.0f64).ln(), ln_m + 1.0],
    ];
    Ok(fit(neg_ll, &starts, model, customers))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn inverse_diagonal_of_a_hand_inverted_matrix() {
        // [[4, 2], [2, 3]]^-1 = [[3, -2], [-2, 4]] / 8.
        let m = vec![vec![4.0, 2.0], vec![2.0, 3.0]];
        let d = inverse_diagonal(&m).unwrap();
        assert!(
            (d[0] - 0.375).abs() < 1e-15 && (d[1] - 0.5).abs() < 1e-15,
            "{d:?}"
        );
        // Not positive definite (eigenvalues 3 and -1): no standard errors.
        assert_eq!(inverse_diagonal(&[vec![1.0, 2.0], vec![2.0, 1.0]]), None);
    }

    /// Draw customers from BG/NBD itself: rate ~ gamma(r, alpha), dropout ~ beta(a, b) (as
    /// ratios of gammas), purchases a Poisson process until dropout, observed for `t` units.
    pub(crate) fn simulate(m: &BgNbd, n: usize, t: f64, seed: u64) -> Vec<(History, f64)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let gamma = |rng: &mut ChaCha8Rng, shape: f64| -> f64 {
            // Marsaglia-Tsang, with the shape < 1 boost.
            let boost = if shape < 1.0 {
                rng.random::<f64>().powf(1.0 / shape)
            } else {
                1.0
            };
            let d = shape.max(1.0) + if shape < 1.0 { 1.0 } else { 0.0 } - 1.0 / 3.0;
            let c = 1.0 / (9.0 * d).sqrt();
            loop {
                let (u1, u2): (f64, f64) = (rng.random(), rng.random());
                let z =
                    (-2.0 * u1.max(1e-300).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                let v = (1.0 + c * z).powi(3);
                if v > 0.0 && rng.random::<f64>().ln() < 0.5 * z * z + d - d * v + d * v.ln() {
                    return d * v * boost;
                }
            }
        };
        (0..n)
            .map(|_| {
                let lambda = gamma(&mut rng, m.r) / m.alpha;
                let ga = gamma(&mut rng, m.a);
                let p = ga / (ga + gamma(&mut rng, m.b));
                let (mut now, mut x, mut last) = (0.0, 0.0, 0.0);
                loop {
                    now += -rng.random::<f64>().max(1e-300).ln() / lambda;
                    if now > t {
                        break;
                    }
                    x += 1.0;
                    last = now;
                    if rng.random::<f64>() < p {
                        break;
                    }
                }
                (History { x, t_x: last, t }, 1.0)
            })
            .collect()
    }

    #[test]
    fn recovers_planted_parameters() {
        let truth = BgNbd {
            r: 0.8,
            alpha: 6.0,
            a: 0.7,
            b: 2.5,
        };
        let data = simulate(&truth, 20_000, 52.0, 7);
        let started = std::time::Instant::now();
        let fit = fit_bgnbd(&data).unwrap();
        println!("fit in {:?}: {fit:?}", started.elapsed());
        assert!(fit.converged, "{fit:?}");
        assert_eq!(fit.customers, 20_000.0);
        let p = fit.params;
        for (name, got, want) in [
            ("r", p.r, truth.r),
            ("alpha", p.alpha, truth.alpha),
            ("a", p.a, truth.a),
            ("b", p.b, truth.b),
        ] {
            // About three standard errors at n = 20,000.
            assert!(
                (got - want).abs() / want < 0.2,
                "{name}: fitted {got}, planted {want}"
            );
        }
        // The fit is at least as likely as the truth.
        let truth_ll: f64 = data.iter().map(|(h, _)| truth.log_likelihood(h)).sum();
        assert!(fit.log_likelihood >= truth_ll - 1e-6);
    }

    #[test]
    fn weights_are_counts() {
        let truth = BgNbd {
            r: 0.5,
            alpha: 4.0,
            a: 0.9,
            b: 3.0,
        };
        let data = simulate(&truth, 3_000, 20.0, 3);
        let mut grouped: std::collections::BTreeMap<(u64, u64), (History, f64)> =
            Default::default();
        for (h, _) in &data {
            let e = grouped
                .entry((h.x.to_bits(), h.t_x.to_bits()))
                .or_insert((*h, 0.0));
            e.1 += 1.0;
        }
        let grouped: Vec<_> = grouped.into_values().collect();
        let a = fit_bgnbd(&data).unwrap();
        let b = fit_bgnbd(&grouped).unwrap();
        assert!((a.log_likelihood - b.log_likelihood).abs() < 1e-6 * a.log_likelihood.abs());
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        assert_eq!(fit_bgnbd(&[]), Err(FitError::Empty));
        let none_repeat = [(
            History {
                x: 0.0,
                t_x: 0.0,
                t: 5.0,
            },
            10.0,
        )];
        assert!(matches!(
            fit_bgnbd(&none_repeat),
            Err(FitError::Degenerate(_))
        ));
        let negative = [(
            History {
                x: 1.0,
                t_x: -1.0,
                t: 5.0,
            },
            1.0,
        )];
        assert!(matches!(fit_bgnbd(&negative), Err(FitError::BadInput(_))));
        let late = [(
            History {
                x: 1.0,
                t_x: 6.0,
                t: 5.0,
            },
            1.0,
        )];
        assert!(matches!(fit_bgnbd(&late), Err(FitError::BadInput(_))));
        assert!(matches!(
            fit_gamma_gamma(&[(2.0, 0.0, 1.0)]),
            Err(FitError::BadInput(_))
        ));
        assert_eq!(fit_gamma_gamma(&[]), Err(FitError::Empty));
    }
}
