//! Maximum-likelihood fits of BG/NBD and Gamma-Gamma on the logs of the parameters, so every
//! parameter stays positive: L-BFGS (argmin) on the analytic gradient from several starting
//! points, each finished by Newton steps on the Hessian from differences of that gradient (which
//! also gives the standard errors). The best start is kept; it counts as converged only when its
//! gradient vanished and the starts that converged agree on the likelihood (a boundary optimum,
//! whose Hessian is singular, converges without standard errors). Rows are weighted: distinct histories with their counts fit exactly as the
//! customers one by one, with far fewer rows.

use std::sync::Mutex;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

use crate::engine::clv::bgnbd::{BgNbd, History};
use crate::engine::clv::gamma_gamma::GammaGamma;
use crate::engine::clv::likelihood::{BgNbdData, GammaGammaData, NegLogLikelihood};

/// The most L-BFGS iterations per start.
const MAX_ITERS: u64 = 300;
/// The most Newton steps that finish a start.
const MAX_NEWTON_STEPS: u64 = 20;
/// A start has converged when every component of the gradient of the mean negative
/// log-likelihood per customer (in the log-parameters) is below this.
const GRADIENT_TOLERANCE: f64 = 1e-9;
/// Starts agree on the optimum when their total log-likelihoods differ by less than this: far
/// below what a likelihood-ratio test could tell apart.
const AGREEMENT: f64 = 1e-3;
/// The step, in log-parameters, of the central differences of the gradient that give the Hessian.
const HESSIAN_STEP: f64 = 1e-5;

/// What a fit found.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted<P> {
    pub params: P,
    pub log_likelihood: f64,
    /// Customers the fit saw (the sum of the weights).
    pub customers: f64,
    pub converged: bool,
    /// Iterations of the best start (L-BFGS and Newton).
    pub iterations: u64,
    /// Asymptotic standard errors of the parameters (in their order), from the inverse of the
    /// observed information (the Hessian of the negative log-likelihood) at the optimum; None
    /// when it is not positive definite (a flat or boundary optimum).
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

/// The mean negative log-likelihood per customer, so that tolerances mean the same at 2,000
/// customers as at 5 million; a point the model cannot take is simply very unlikely. The last
/// evaluation is kept: argmin asks for the cost and then the gradient at the same point, and one
/// pass over the rows gives both.
struct PerCustomer<'a, L: NegLogLikelihood> {
    nll: &'a L,
    last: Mutex<Option<Evaluation>>,
}

/// Log-parameters, and the mean negative log-likelihood and its gradient there.
type Evaluation = (Vec<f64>, f64, Vec<f64>);

impl<'a, L: NegLogLikelihood> PerCustomer<'a, L> {
    fn new(nll: &'a L) -> Self {
        PerCustomer {
            nll,
            last: Mutex::new(None),
        }
    }

    fn value_and_gradient(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, value, grad)) = last.as_ref()
            && at == theta
        {
            return (*value, grad.clone());
        }
        let (value, grad) = self.nll.value_and_gradient(theta);
        let n = self.nll.customers();
        let (value, grad) = if value.is_finite() && grad.iter().all(|g| g.is_finite()) {
            (value / n, grad.into_iter().map(|g| g / n).collect())
        } else {
            (f64::MAX / 4.0, vec![0.0; theta.len()])
        };
        *last = Some((theta.to_vec(), value, grad.clone()));
        (value, grad)
    }
}

impl<L: NegLogLikelihood> CostFunction for PerCustomer<'_, L> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, theta: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.value_and_gradient(theta).0)
    }
}

impl<L: NegLogLikelihood> Gradient for PerCustomer<'_, L> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, theta: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.value_and_gradient(theta).1)
    }
}

/// Where one start ended.
#[derive(Debug, Clone)]
struct Optimum {
    theta: Vec<f64>,
    /// Mean negative log-likelihood per customer.
    cost: f64,
    iterations: u64,
    /// The Hessian of the mean negative log-likelihood at `theta`, when positive definite.
    hessian: Option<Vec<Vec<f64>>>,
    converged: bool,
}

/// Minimise `nll` from each start and report the best point as `model` gives it.
fn fit<P>(
    nll: &impl NegLogLikelihood,
    starts: &[Vec<f64>],
    model: impl Fn(&[f64]) -> P,
) -> Fitted<P> {
    let f = PerCustomer::new(nll);
    let optima: Vec<Optimum> = starts.iter().map(|s| optimise(&f, s)).collect();
    let best = optima
        .iter()
        .min_by(|p, q| p.cost.total_cmp(&q.cost))
        .expect("at least one start")
        .clone();
    // Converged starts that disagree on the optimum mean a multi-modal likelihood; they agree
    // when their total log-likelihoods are within AGREEMENT of each other.
    let customers = nll.customers();
    let converged: Vec<f64> = optima
        .iter()
        .filter(|o| o.converged)
        .map(|o| o.cost)
        .collect();
    let agree = converged
        .iter()
        .filter(|c| (**c - best.cost).abs() * customers <= AGREEMENT)
        .count()
        >= 2.min(converged.len());
    let standard_errors = best.hessian.as_ref().and_then(|h| {
        // The information of all the customers is n times the per-customer one.
        let total: Vec<Vec<f64>> = h
            .iter()
            .map(|row| row.iter().map(|v| v * customers).collect())
            .collect();
        standard_errors(&total, &best.theta)
    });
    Fitted {
        params: model(&best.theta),
        log_likelihood: -best.cost * customers,
        customers,
        converged: best.converged && agree,
        iterations: best.iterations,
        standard_errors,
    }
}

/// L-BFGS from `start`: where it stopped and its iterations.
fn lbfgs<L: NegLogLikelihood>(
    f: &PerCustomer<'_, L>,
    start: &[f64],
) -> Result<(Vec<f64>, u64), argmin::core::Error> {
    let search = MoreThuenteLineSearch::new().with_c(1e-4, 0.9)?;
    let solver = LBFGS::new(search, 7).with_tolerance_grad(GRADIENT_TOLERANCE)?;
    let res = Executor::new(PerCustomer::new(f.nll), solver)
        .configure(|s| s.param(start.to_vec()).max_iters(MAX_ITERS))
        .run()?;
    let state = res.state();
    let theta = state.get_best_param().cloned().unwrap_or(start.to_vec());
    Ok((theta, state.get_iter()))
}

/// L-BFGS from `start`, then Newton steps until the gradient vanishes.
fn optimise<L: NegLogLikelihood>(f: &PerCustomer<'_, L>, start: &[f64]) -> Optimum {
    // A line search that fails (at a point it cannot improve) leaves Newton to finish.
    let (mut theta, mut iterations) = lbfgs(f, start).unwrap_or((start.to_vec(), 0));
    let (mut cost, mut grad) = f.value_and_gradient(&theta);
    let mut hessian_here = hessian(f, &theta);
    for _ in 0..MAX_NEWTON_STEPS {
        if max_abs(&grad) < GRADIENT_TOLERANCE * 1e-3 {
            break;
        }
        let Some(step) = newton_step(f, &hessian_here, &theta, &grad, cost) else {
            break;
        };
        iterations += 1;
        (theta, cost, grad) = step;
        hessian_here = hessian(f, &theta);
    }
    let hessian = Some(hessian_here).filter(|h| cholesky(h).is_some());
    Optimum {
        converged: max_abs(&grad) < GRADIENT_TOLERANCE && cost.is_finite(),
        theta,
        cost,
        iterations,
        hessian,
    }
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// A Newton step damped as Levenberg-Marquardt's: −(H + λI)⁻¹g with the least λ (from 0 up,
/// relative to H's diagonal) for which it is positive definite and the step improves, so that on
/// a ridge (a boundary optimum, where H is singular) the identified parameters still converge.
/// None when no such step improves the cost or the gradient.
fn newton_step<L: NegLogLikelihood>(
    f: &PerCustomer<'_, L>,
    hessian: &[Vec<f64>],
    theta: &[f64],
    grad: &[f64],
    cost: f64,
) -> Option<(Vec<f64>, f64, Vec<f64>)> {
    let scale = (0..hessian.len()).fold(0.0f64, |m, i| m.max(hessian[i][i].abs()));
    let dampings = std::iter::once(0.0).chain((0..14).map(|k| scale * 10f64.powi(k - 12)));
    for lambda in dampings {
        let damped: Vec<Vec<f64>> = (0..hessian.len())
            .map(|i| {
                let mut row = hessian[i].clone();
                row[i] += lambda;
                row
            })
            .collect();
        let Some(l) = cholesky(&damped) else { continue };
        let direction = cholesky_solve(&l, grad);
        let next: Vec<f64> = theta.iter().zip(&direction).map(|(t, d)| t - d).collect();
        let (next_cost, next_grad) = f.value_and_gradient(&next);
        // Near the optimum the cost's rounding (about 1e-14 of it) hides the step; the gradient
        // still resolves it.
        let better = next_cost < cost
            || (next_cost <= cost + 1e-12 * cost.abs() && max_abs(&next_grad) < max_abs(grad));
        if better {
            return Some((next, next_cost, next_grad));
        }
    }
    None
}

/// The Hessian of `f` at `theta` by central differences of its analytic gradient, symmetrised.
fn hessian<L: NegLogLikelihood>(f: &PerCustomer<'_, L>, theta: &[f64]) -> Vec<Vec<f64>> {
    let n = theta.len();
    let columns: Vec<Vec<f64>> = (0..n)
        .map(|j| {
            let at = |d: f64| {
                let mut p = theta.to_vec();
                p[j] += d;
                f.value_and_gradient(&p).1
            };
            let (up, down) = (at(HESSIAN_STEP), at(-HESSIAN_STEP));
            (0..n)
                .map(|i| (up[i] - down[i]) / (2.0 * HESSIAN_STEP))
                .collect()
        })
        .collect();
    (0..n)
        .map(|i| {
            (0..n)
                .map(|j| 0.5 * (columns[i][j] + columns[j][i]))
                .collect()
        })
        .collect()
}

/// Standard errors of exp(θ) at the optimum θ, from the Hessian of the total negative
/// log-likelihood in θ: the inverse's diagonal, mapped by the delta method (exact at an optimum,
/// where the gradient vanishes: se(φ) = φ · se(θ)).
fn standard_errors(hessian: &[Vec<f64>], theta: &[f64]) -> Option<Vec<f64>> {
    let variances = inverse_diagonal(hessian)?;
    let se: Vec<f64> = theta
        .iter()
        .zip(variances)
        .map(|(t, v)| t.exp() * v.sqrt())
        .collect();
    se.iter().all(|s| s.is_finite()).then_some(se)
}

/// The lower Cholesky factor of a symmetric matrix; None when it is not positive definite.
/// Indexed loops: the textbook recurrence, read as written.
#[allow(clippy::needless_range_loop)]
fn cholesky(m: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
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
    Some(l)
}

/// Solve L Lᵀ x = b by forward then back substitution.
fn cholesky_solve(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i][k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i][i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k][i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i][i];
    }
    x
}

/// The diagonal of the inverse of a symmetric positive definite matrix; None when it is not
/// positive definite.
fn inverse_diagonal(m: &[Vec<f64>]) -> Option<Vec<f64>> {
    let l = cholesky(m)?;
    let n = m.len();
    let diagonal = (0..n)
        .map(|k| {
            let e: Vec<f64> = (0..n).map(|i| if i == k { 1.0 } else { 0.0 }).collect();
            cholesky_solve(&l, &e)[k]
        })
        .collect();
    Some(diagonal)
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
    let prepared = BgNbdData::new(data);
    // Starts around the scale of the data: alpha near the mean observation length.
    let ln_t = prepared.mean_t().max(1e-3).ln();
    let starts = [
        vec![0.0, ln_t, 0.0, 0.0],
        vec![(0.3f64).ln(), ln_t - 2.0, (0.8f64).ln(), (2.5f64).ln()],
        vec![(2.0f64).ln(), ln_t + 1.0, (2.0f64).ln(), (5.0f64).ln()],
    ];
    Ok(fit(&prepared, &starts, model))
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
    let prepared = GammaGammaData::new(data);
    let ln_m = prepared.mean_value().ln();
    let starts = [
        vec![0.0, 0.0, ln_m],
        vec![(5.0f64).ln(), (3.0f64).ln(), ln_m],
        vec![(2.0f64).ln(), (10.0f64).ln(), ln_m + 1.0],
    ];
    Ok(fit(&prepared, &starts, model))
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
    fn a_likelihood_that_peaks_at_no_dropout_converges_without_standard_errors() {
        // Customers who never drop out (a → 0): the supremum is on the boundary, along a ridge
        // in (a, b). r and alpha are still identified and every start agrees on them; a and b
        // are not, so there are no standard errors.
        let truth = BgNbd {
            r: 0.7,
            alpha: 9.0,
            a: 1e-9,
            b: 1e3,
        };
        let data = simulate(&truth, 5_000, 52.0, 11);
        let fit = fit_bgnbd(&data).unwrap();
        assert!(fit.converged, "{fit:?}");
        assert_eq!(fit.standard_errors, None, "{fit:?}");
        let p = fit.params;
        assert!(p.a / (p.a + p.b) < 1e-4, "dropout probability {:?}", p);
        assert!(
            (p.r - 0.7).abs() < 0.1 && (p.alpha - 9.0).abs() < 1.5,
            "{p:?}"
        );
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
