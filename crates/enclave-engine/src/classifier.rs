//! A classification head over sentence embeddings: multinomial logistic regression with L2
//! regularisation, fitted by full-batch gradient descent (the problem is convex and small:
//! at most a few thousand examples of a few hundred dimensions). It is a first-class object so
//! the same head can be fitted per request from examples or stored as a custom model.

/// A fitted classifier: one weight row and bias per label.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearClassifier {
    pub labels: Vec<String>,
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
}

/// Fitting settings.
#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    pub iterations: usize,
    pub learning_rate: f32,
    /// L2 penalty on the weights.
    pub l2: f32,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            iterations: 400,
            learning_rate: 4.0,
            l2: 1e-4,
        }
    }
}

fn softmax(logits: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for z in logits.iter_mut() {
        *z = (*z - max).exp();
        sum += *z;
    }
    for z in logits.iter_mut() {
        *z /= sum;
    }
}

impl LinearClassifier {
    /// Fits on `(embedding, label index)` pairs; `labels` names the indices.
    pub fn fit(labels: Vec<String>, examples: &[(Vec<f32>, usize)], options: FitOptions) -> Self {
        let classes = labels.len();
        let dim = examples.first().map_or(0, |(x, _)| x.len());
        let mut model = Self {
            labels,
            weights: vec![vec![0.0; dim]; classes],
            bias: vec![0.0; classes],
        };
        if examples.is_empty() || classes == 0 {
            return model;
        }
        // Each class weighs the same in the loss, however many examples it has.
        let mut per_class = vec![0usize; classes];
        for (_, y) in examples {
            per_class[*y] += 1;
        }
        let class_weight: Vec<f32> = per_class
            .iter()
            .map(|&n| examples.len() as f32 / (classes as f32 * n.max(1) as f32))
            .collect();
        let n = examples.len() as f32;
        let mut grad_w = vec![vec![0.0f32; dim]; classes];
        let mut grad_b = vec![0.0f32; classes];
        for _ in 0..options.iterations {
            for row in grad_w.iter_mut() {
                row.iter_mut().for_each(|g| *g = 0.0);
            }
            grad_b.iter_mut().for_each(|g| *g = 0.0);
            for (x, y) in examples {
                let mut p = model.logits(x);
                softmax(&mut p);
                let weight = class_weight[*y];
                for (c, pc) in p.iter().enumerate() {
                    let err = weight * (pc - if c == *y { 1.0 } else { 0.0 });
                    grad_b[c] += err;
                    for (g, xi) in grad_w[c].iter_mut().zip(x) {
                        *g += err * xi;
                    }
                }
            }
            for c in 0..classes {
                model.bias[c] -= options.learning_rate * grad_b[c] / n;
                for (w, g) in model.weights[c].iter_mut().zip(&grad_w[c]) {
                    *w -= options.learning_rate * (g / n + options.l2 * *w);
                }
            }
        }
        model
    }

    fn logits(&self, x: &[f32]) -> Vec<f32> {
        self.weights
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| w.iter().zip(x).map(|(a, b)| a * b).sum::<f32>() + b)
            .collect()
    }

    /// Probability of each label (in `labels` order); they sum to 1.
    pub fn predict(&self, x: &[f32]) -> Vec<f32> {
        let mut p = self.logits(x);
        softmax(&mut p);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_two_clusters_and_probabilities_sum_to_one() {
        let examples = vec![
            (vec![1.0, 0.1], 0),
            (vec![0.9, -0.1], 0),
            (vec![0.1, 1.0], 1),
            (vec![-0.1, 0.9], 1),
            (vec![0.0, 1.1], 1),
        ];
        let model = LinearClassifier::fit(
            vec!["a".into(), "b".into()],
            &examples,
            FitOptions::default(),
        );
        let p = model.predict(&[0.95, 0.0]);
        assert!(p[0] > 0.8, "{p:?}");
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(model.predict(&[0.0, 1.0])[1] > 0.8);
    }
}
