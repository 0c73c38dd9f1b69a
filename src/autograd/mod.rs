//! Autograd-lite: a tape that records each op's backward closure and replays them in reverse,
//! accumulating gradients (a tensor used twice gets the sum). Plus a public finite-difference
//! gradient checker ([`gradcheck`]) so downstream crates can check their own ops the same way.
//!
//! ```
//! use asif_kernels::{autograd::Tape, ops::gelu::gelu, Device, Tensor};
//! let device = Device::cpu();
//! let tape = Tape::new();
//! let x = tape.leaf(Tensor::from_vec(&device, &[3], vec![-1.0, 0.0, 2.0])?);
//! let y = gelu(&tape, &x)?;
//! let grads = tape.backward(&y, Tensor::from_vec(&device, &[3], vec![1.0; 3])?)?;
//! assert_eq!(grads.get(&x).unwrap().shape(), &[3]);
//! # Ok::<(), asif_kernels::Error>(())
//! ```
pub mod gradcheck;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::accumulate::add_assign;
use crate::{Error, Result, Tensor};

/// Identifies a value recorded on a tape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VarId(usize);

/// A tensor recorded on a tape.
#[derive(Debug, Clone)]
pub struct Var {
    id: VarId,
    value: Tensor,
}

impl Var {
    pub fn id(&self) -> VarId {
        self.id
    }
    pub fn value(&self) -> &Tensor {
        &self.value
    }
}

/// A backward rule: given the gradients of the node's outputs (`None` where an output received
/// none: treat it as zeros), the gradients of its inputs.
pub type BackwardFn = Box<dyn FnOnce(&[Option<Tensor>]) -> Result<Vec<(VarId, Tensor)>>>;

struct Node {
    outputs: Vec<VarId>,
    backward: BackwardFn,
}

/// The tape. Neither `Send` nor `Sync`: it keeps backward closures that are not `Send` in a
/// `RefCell`, so a tape belongs to the thread that made it (one tape per thread; the tensors it
/// records are `Send + Sync`).
#[derive(Default)]
pub struct Tape {
    nodes: RefCell<Vec<Node>>,
    next_id: Cell<usize>,
}

impl Tape {
    pub fn new() -> Self {
        Tape::default()
    }

    fn fresh_id(&self) -> VarId {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        VarId(id)
    }

    /// An input (parameter or data) whose gradient is wanted.
    pub fn leaf(&self, value: Tensor) -> Var {
        Var {
            id: self.fresh_id(),
            value,
        }
    }

    /// Records an op's output and its backward rule. Public so that downstream crates can put
    /// their own ops on the tape.
    pub fn record(
        &self,
        value: Tensor,
        backward: impl FnOnce(&Tensor) -> Result<Vec<(VarId, Tensor)>> + 'static,
    ) -> Var {
        let mut outputs =
            self.record_many(vec![value], move |grads: &[Option<Tensor>]| {
                match &grads[0] {
                    Some(grad) => backward(grad),
                    None => Ok(Vec::new()),
                }
            });
        outputs.remove(0)
    }

    /// Records an op with several outputs (attention's O_X, O_A, O_P). The backward runs once,
    /// when any output has a gradient, and gets `None` for outputs that have none.
    pub fn record_many(
        &self,
        values: Vec<Tensor>,
        backward: impl FnOnce(&[Option<Tensor>]) -> Result<Vec<(VarId, Tensor)>> + 'static,
    ) -> Vec<Var> {
        let vars: Vec<Var> = values
            .into_iter()
            .map(|value| Var {
                id: self.fresh_id(),
                value,
            })
            .collect();
        self.nodes.borrow_mut().push(Node {
            outputs: vars.iter().map(|v| v.id).collect(),
            backward: Box::new(backward),
        });
        vars
    }

    /// Replays the recorded backward rules in reverse, starting from `grad_output` for `output`.
    /// The tape is consumed (its nodes are run once); gradients of every recorded value that
    /// received one are returned.
    pub fn backward(&self, output: &Var, grad_output: Tensor) -> Result<Gradients> {
        self.backward_from(vec![(output, grad_output)])
    }

    /// As [`Tape::backward`], seeded at several outputs at once (their contributions add up).
    pub fn backward_from(&self, seeds: Vec<(&Var, Tensor)>) -> Result<Gradients> {
        let mut gradients = Gradients {
            by_id: HashMap::new(),
        };
        for (output, grad_output) in seeds {
            if grad_output.shape() != output.value.shape() {
                return Err(Error::shape(
                    "Tape::backward",
                    format!(
                        "gradient {:?} for output {:?}",
                        grad_output.shape(),
                        output.value.shape()
                    ),
                ));
            }
            gradients.accumulate(output.id, grad_output)?;
        }
        let nodes = std::mem::take(&mut *self.nodes.borrow_mut());
        for node in nodes.into_iter().rev() {
            let grads: Vec<Option<Tensor>> = node
                .outputs
                .iter()
                .map(|id| gradients.by_id.get(id).cloned())
                .collect();
            if grads.iter().all(Option::is_none) {
                continue;
            }
            for (id, input_grad) in (node.backward)(&grads)? {
                gradients.accumulate(id, input_grad)?;
            }
        }
        Ok(gradients)
    }
}

/// Gradients by variable.
pub struct Gradients {
    by_id: HashMap<VarId, Tensor>,
}

impl Gradients {
    pub fn get(&self, var: &Var) -> Option<&Tensor> {
        self.by_id.get(&var.id)
    }

    fn accumulate(&mut self, id: VarId, grad: Tensor) -> Result<()> {
        match self.by_id.get_mut(&id) {
            Some(existing) => add_assign(existing, &grad),
            None => {
                self.by_id.insert(id, grad);
                Ok(())
            }
        }
    }
}
