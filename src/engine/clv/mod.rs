//! Customer-base models for predictive lifetime value: the Gaussian hypergeometric function they
//! need, BG/NBD (purchase frequency and dropout: P(alive), expected purchases) and Gamma-Gamma
//! (spend per purchase), each with its log-likelihood and a maximum-likelihood fit. The math is
//! f64; the SQL functions (`sql`) round money to cents at the boundary.

pub mod bgnbd;
pub mod fit;
pub mod gamma_gamma;
pub mod hyp2f1;
pub mod likelihood;
pub mod sql;
