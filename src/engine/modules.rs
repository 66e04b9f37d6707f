//! The network as burn modules: what burn's engine trains and runs (`--backend flex`, or a
//! GPU), and its conversion to and from the named [`Params`]. Built with the `flex` feature
//! (and in the tests, which hold our kernels to it).

use burn::module::{Module, Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::network::{
    CONV1_FILTERS, CONV2_FILTERS, DROPOUT_HIDDEN, DROPOUT_POOLED, FEATURES, HIDDEN, KERNEL, Layer,
    NUM_CLASSES, POOL, Params, TENSOR_NAMES,
};

/// Conv 32 → Conv 64 → MaxPool → Dropout 0.35 → Dense 128 → Dropout 0.5 → Dense 10, with the
/// sizes of [`crate::network`].
///
/// `forward` returns logits; the softmax lives in the loss, as log-softmax (the same
/// mathematics without the overflow).
#[derive(Module, Debug)]
pub struct Model {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    dropout1: Dropout,
    dense1: Linear,
    dropout2: Dropout,
    dense2: Linear,
}

impl Model {
    /// A fresh network, Keras's initialisation drawn from `seed` ([`Params::glorot`]).
    pub fn new(device: &Device, seed: u64) -> Model {
        Model::from_params(&Params::glorot(seed), device)
    }

    /// The network holding `params`, on `device` (trainable there if it is an autodiff device).
    pub fn from_params(params: &Params, device: &Device) -> Model {
        // Fixed ids (burn draws random ones) in the order of TENSOR_NAMES keep same-seed model
        // files byte-identical. The layers start as zeros, replaced at once: no random draw.
        let named = params.named();
        let conv = |[c_in, c_out]: [usize; 2], i: usize| {
            let mut conv = Conv2dConfig::new([c_in, c_out], [KERNEL, KERNEL])
                .with_initializer(Initializer::Zeros)
                .init(device);
            conv.weight = param(&named, i, device);
            conv.bias = Some(param(&named, i + 1, device));
            conv
        };
        let linear = |[inputs, outputs]: [usize; 2], i: usize| {
            let mut linear = LinearConfig::new(inputs, outputs)
                .with_initializer(Initializer::Zeros)
                .init(device);
            linear.weight = param(&named, i, device);
            linear.bias = Some(param(&named, i + 1, device));
            linear
        };
        Model {
            conv1: conv([1, CONV1_FILTERS], 0),
            conv2: conv([CONV1_FILTERS, CONV2_FILTERS], 2),
            pool: MaxPool2dConfig::new([POOL, POOL]).init(),
            dropout1: DropoutConfig::new(DROPOUT_POOLED).init(),
            dense1: linear([FEATURES, HIDDEN], 4),
            dropout2: DropoutConfig::new(DROPOUT_HIDDEN).init(),
            dense2: linear([HIDDEN, NUM_CLASSES], 6),
        }
    }

    /// The parameters' values, read back from the device.
    pub fn params(&self) -> Params {
        fn values<const D: usize>(t: &Param<Tensor<D>>) -> Vec<f32> {
            t.val()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32 parameters")
        }
        let layer = |weight: &Param<Tensor<4>>, bias: &Option<Param<Tensor<1>>>| Layer {
            weight: values(weight),
            bias: bias.as_ref().map(values).unwrap_or_default(),
        };
        let dense = |weight: &Param<Tensor<2>>, bias: &Option<Param<Tensor<1>>>| Layer {
            weight: values(weight),
            bias: bias.as_ref().map(values).unwrap_or_default(),
        };
        Params {
            conv1: layer(&self.conv1.weight, &self.conv1.bias),
            conv2: layer(&self.conv2.weight, &self.conv2.bias),
            dense1: dense(&self.dense1.weight, &self.dense1.bias),
            dense2: dense(&self.dense2.weight, &self.dense2.bias),
        }
    }

    /// burn's id of each parameter, in the order of [`TENSOR_NAMES`].
    pub fn param_ids(&self) -> [(ParamId, &'static str); 8] {
        let ids = [
            self.conv1.weight.id,
            self.conv1.bias.as_ref().expect("bias").id,
            self.conv2.weight.id,
            self.conv2.bias.as_ref().expect("bias").id,
            self.dense1.weight.id,
            self.dense1.bias.as_ref().expect("bias").id,
            self.dense2.weight.id,
            self.dense2.bias.as_ref().expect("bias").id,
        ];
        let mut names = TENSOR_NAMES.into_iter();
        ids.map(|id| (id, names.next().expect("eight names")))
    }

    /// Logits `[n, 10]` for images `[n, 1, 28, 28]` scaled to [0, 1]. Dropout is active only
    /// on an autodiff device in training mode.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_observed(images, &mut |_, _| {})
    }

    /// `forward`, reporting each layer's output shape to `observe` (for the summary).
    fn forward_observed(
        &self,
        images: Tensor<4>,
        observe: &mut dyn FnMut(usize, &[usize]),
    ) -> Tensor<2> {
        let x = relu(self.conv1.forward(images));
        observe(0, &x.dims());
        let x = relu(self.conv2.forward(x));
        observe(1, &x.dims());
        let x = self.pool.forward(x);
        observe(2, &x.dims());
        let x = self.dropout1.forward(x);
        observe(3, &x.dims());
        let x: Tensor<2> = x.flatten(1, 3);
        observe(4, &x.dims());
        let x = relu(self.dense1.forward(x));
        observe(5, &x.dims());
        let x = self.dropout2.forward(x);
        observe(6, &x.dims());
        let x = self.dense2.forward(x);
        observe(7, &x.dims());
        x
    }
}

/// Categorical cross-entropy of each sample (burn's engine trains on this; rows of host
/// logits are scored by [`crate::metrics::cross_entropy`]): `-log softmax(logits)[label]`.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    log_softmax(logits, 1)
        .gather(1, labels.unsqueeze_dim(1))
        .squeeze_dim::<1>(1)
        .neg()
}

/// Tensor `i` of `named` ([`Params::named`]) as a parameter with the fixed id `i + 1`.
fn param<const D: usize>(
    named: &[(&str, Vec<usize>, &[f32]); 8],
    i: usize,
    device: &Device,
) -> Param<Tensor<D>> {
    let (_, shape, values) = &named[i];
    let data = TensorData::new(values.to_vec(), shape.clone());
    let tensor = Tensor::from_data(data, device);
    let id = ParamId::from(i as u64 + 1);
    let tensor = if tensor.device().is_autodiff() {
        tensor.require_grad()
    } else {
        tensor
    };
    Param::initialized(id, tensor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::provenance;
    use crate::model::{file_bytes, from_file_bytes};
    use burn_pack::Bytes;
    use std::path::Path;

    #[test]
    fn has_the_keras_parameter_count_and_the_summarys_shapes() {
        let model = Model::new(&Device::default(), 1);
        assert_eq!(model.num_params(), crate::network::PARAMETERS);
        // The summary's table is computed from the network's sizes: burn's layers, run on
        // one blank image, give the same output shapes.
        let mut measured = Vec::new();
        let probe = Tensor::<4>::zeros(
            [1, 1, crate::network::SIDE, crate::network::SIDE],
            &Device::default(),
        );
        model
            .valid()
            .forward_observed(probe, &mut |_, dims| measured.push(dims[1..].to_vec()));
        assert_eq!(measured, crate::model::output_shapes().to_vec());
    }

    #[test]
    fn params_round_trip_through_burns_modules() {
        let params = Params::glorot(7).with_random_biases(2);
        let model = Model::from_params(&params, &Device::default());
        assert_eq!(model.params(), params);
        let ids: Vec<u64> = model.param_ids().iter().map(|(id, _)| id.val()).collect();
        assert_eq!(ids, (1..=8).collect::<Vec<u64>>());
        // On the autodiff device too, where the parameters are trainable.
        let trainable = Model::from_params(&params, &Device::default().autodiff());
        assert!(trainable.dense1.weight.val().is_require_grad());
        assert_eq!(trainable.params(), params);
    }

    #[test]
    fn the_file_is_burns_own_module_record() {
        use burn::store::ModuleRecord;
        let device = Device::default();
        let params = Params::glorot(5).with_random_biases(6);
        // What burn writes for the module (and what earlier builds saved) reads back...
        let burns = Model::from_params(&params, &device)
            .into_record()
            .into_bytes()
            .unwrap()
            .to_vec();
        let read = from_file_bytes(burns.clone(), Path::new("m.bin")).unwrap();
        assert_eq!(read.params, params);
        // ...and without a run, the file is byte for byte burn's; with one, burn still loads it.
        assert_eq!(file_bytes(&params, None).unwrap(), burns);
        let ours = file_bytes(&params, Some(&provenance())).unwrap();
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(ours)).unwrap();
        let loaded = Model::from_params(&Params::zeros(), &device)
            .try_load_record(record)
            .unwrap();
        assert_eq!(loaded.params(), params);
    }

    #[test]
    fn cross_entropy_by_hand() {
        let device = Device::default();
        let logits = Tensor::<2>::from_data(
            TensorData::from([
                [2.0f32, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0; 10],
            ]),
            &device,
        );
        let labels = Tensor::<1, Int>::from_data(TensorData::from([0i64, 3]), &device);
        let loss: Vec<f32> = cross_entropy(logits, labels)
            .into_data()
            .try_to_vec()
            .unwrap();
        let first = -(2f32.exp() / (2f32.exp() + 9.0)).ln();
        assert!((loss[0] - first).abs() < 1e-6, "{loss:?}");
        assert!((loss[1] - 10f32.ln()).abs() < 1e-6, "{loss:?}");
    }
}
