//! Customer-base models for predictive lifetime value: the Gaussian hypergeometric function they
//! need, BG/NBD (purchase frequency and dropout: P(alive), expected purchases) and Gamma-Gamma
//! (spend per purchase), each with its log-likelihood and a maximum-likelihood fit. The math is
//! f64; callers round money at the boundary.

pub mod bgnbd;
pub mod fit;
pub mod gamma_gamma;
pub mod hyp2f1;
