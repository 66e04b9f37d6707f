//! The network as an ONNX graph of standard operators (opset 13), with the trained weights as
//! its initializers: what ONNX Runtime, OpenVINO, onnxruntime-web or tract run.
//!
//! `input` `[N, 1, 28, 28]` float32, pixels scaled to [0, 1] (MNIST's bytes / 255), the batch
//! dimension `N` free → Conv → Relu → Conv → Relu → MaxPool → Flatten → Gemm → Relu → Gemm
//! (`logits`) → Softmax (`probabilities`). Dropout is an identity at inference and is left
//! out. The initializers are the tensors of the safetensors export, under the same names and in
//! the same (PyTorch) layouts, so `Gemm` multiplies by the transposed weight (`transB = 1`).

use prost::Message;

use super::onnx_proto::{
    AttributeProto, AttributeType, FLOAT, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    tensor_shape_proto::{Dimension, dimension},
    type_proto,
};
use super::torch_tensors;
use crate::model::{ModelFile, le_bytes};
use crate::network::{KERNEL, NUM_CLASSES, POOL, SIDE};

/// The operator set the graph is written against (all its operators exist unchanged there).
pub const OPSET: i64 = 13;
/// ONNX's IR version 8, which every current runtime reads.
const IR_VERSION: i64 = 8;
/// The graph's input and outputs.
pub const INPUT: &str = "input";
pub const PROBABILITIES: &str = "probabilities";
pub const LOGITS: &str = "logits";

/// The ONNX file of `model`; its metadata names the producer and, where the model file knows
/// them, the training run's figures.
pub fn to_bytes(model: &ModelFile) -> Vec<u8> {
    let initializer = torch_tensors(&model.params)
        .into_iter()
        .map(|t| TensorProto {
            dims: t.shape.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            name: t.name.to_string(),
            raw_data: le_bytes(&t.values),
        })
        .collect();
    let kernel = ints("kernel_shape", &[KERNEL, KERNEL]);
    let pool = [
        ints("kernel_shape", &[POOL, POOL]),
        ints("strides", &[POOL, POOL]),
    ];
    let node = vec![
        node(
            "Conv",
            &[INPUT, "conv1.weight", "conv1.bias"],
            "conv1",
            vec![kernel.clone()],
        ),
        node("Relu", &["conv1"], "relu1", vec![]),
        node(
            "Conv",
            &["relu1", "conv2.weight", "conv2.bias"],
            "conv2",
            vec![kernel],
        ),
        node("Relu", &["conv2"], "relu2", vec![]),
        node("MaxPool", &["relu2"], "pool", pool.to_vec()),
        node("Flatten", &["pool"], "flatten", vec![int("axis", 1)]),
        node(
            "Gemm",
            &["flatten", "dense1.weight", "dense1.bias"],
            "dense1",
            vec![int("transB", 1)],
        ),
        node("Relu", &["dense1"], "relu3", vec![]),
        node(
            "Gemm",
            &["relu3", "dense2.weight", "dense2.bias"],
            LOGITS,
            vec![int("transB", 1)],
        ),
        node("Softmax", &[LOGITS], PROBABILITIES, vec![int("axis", 1)]),
    ];
    let graph = GraphProto {
        node,
        name: "mnist_cnn".into(),
        initializer,
        doc_string: "Keras's mnist_cnn.py convnet, trained by mnist-cnn".into(),
        input: vec![value(
            INPUT,
            &[1, SIDE, SIDE],
            "28x28 grey images, white digit on black, pixels / 255 (MNIST's own form)",
        )],
        output: vec![
            value(PROBABILITIES, &[NUM_CLASSES], "softmax over the digits 0-9"),
            value(LOGITS, &[NUM_CLASSES], "the scores before the softmax"),
        ],
    };
    let metadata_props = model
        .provenance
        .iter()
        .flat_map(|p| p.entries())
        .map(|(key, value)| StringStringEntryProto {
            key: key.into(),
            value,
        })
        .collect();
    ModelProto {
        ir_version: IR_VERSION,
        producer_name: "mnist-cnn".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string: "Reads a handwritten digit: input [N, 1, 28, 28] float32 in [0, 1] → \
                     probabilities [N, 10]."
            .into(),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props,
    }
    .encode_to_vec()
}

fn node(op_type: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        op_type: op_type.into(),
        attribute,
    }
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i,
        ints: Vec::new(),
        r#type: AttributeType::Int as i32,
    }
}

fn ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: 0,
        ints: values.iter().map(|&v| v as i64).collect(),
        r#type: AttributeType::Ints as i32,
    }
}

/// A float32 tensor value `[N, dims…]`, `N` the free batch dimension.
fn value(name: &str, dims: &[usize], doc: &str) -> ValueInfoProto {
    let batch = Dimension {
        value: Some(dimension::Value::DimParam("N".into())),
    };
    let rest = dims.iter().map(|&d| Dimension {
        value: Some(dimension::Value::DimValue(d as i64)),
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto {
                    dim: std::iter::once(batch).chain(rest).collect(),
                }),
            })),
        }),
        doc_string: doc.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataSource, Part};
    use crate::engine::{self, Backend};
    use crate::model::Provenance;
    use crate::network::{NUM_CLASSES, Params};
    use tract_onnx::prelude::*;

    /// The committed subset of MNIST's test images (real digits, no network), scaled to [0, 1].
    fn test_pixels() -> Vec<f32> {
        let split = DataSource::committed_subset()
            .load(Part::Test, None)
            .unwrap();
        split.images.iter().map(|&p| f32::from(p) / 255.0).collect()
    }

    #[test]
    fn tract_runs_the_exported_graph_to_evals_probabilities() {
        let params = Params::glorot(21).with_random_biases(22);
        let provenance = Provenance {
            epochs: 12,
            seed: 21,
            batch: 128,
            test_images: 10_000,
            test_loss: 0.5,
            test_accuracy: 0.75,
        };
        let file = ModelFile {
            params: params.clone(),
            provenance: Some(provenance),
        };
        let bytes = to_bytes(&file);

        let decoded = ModelProto::decode(&bytes[..]).unwrap();
        let ops: Vec<&str> = decoded
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type.as_str())
            .collect();
        assert_eq!(
            ops,
            [
                "Conv", "Relu", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm",
                "Softmax"
            ]
        );
        let seed = decoded.metadata_props.iter().find(|p| p.key == "seed");
        assert_eq!(seed.map(|p| p.value.as_str()), Some("21"));

        // The whole committed test subset.
        let pixels = test_pixels();
        let n = pixels.len() / (SIDE * SIDE);
        let runnable = onnx()
            .model_for_read(&mut &bytes[..])
            .unwrap()
            .with_input_fact(0, f32::fact([n, 1, SIDE, SIDE]).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let input =
            tract_ndarray::Array4::from_shape_vec((n, 1, SIDE, SIDE), pixels.clone()).unwrap();
        let outputs = runnable.run(tvec!(Tensor::from(input).into())).unwrap();
        let tract_probabilities = outputs[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<f32>>();

        let net = engine::forward(Backend::Cpu, params).unwrap();
        let logits = net.logits(&pixels);
        assert_eq!(logits.len(), n * NUM_CLASSES);
        assert_eq!(tract_probabilities.len(), n * NUM_CLASSES);
        let mut ours = Vec::new();
        for row in logits.chunks(NUM_CLASSES) {
            let mut probs = [0f64; NUM_CLASSES];
            crate::metrics::softmax(row, &mut probs);
            ours.extend(probs.map(|p| p as f32));
        }
        let worst = ours
            .iter()
            .zip(&tract_probabilities)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-5, "largest difference {worst}");
        println!(
            "tract vs eval's forward pass, {n} test images: probabilities differ by at most {worst:e}"
        );
        let tract_logits: Vec<f32> = outputs[1]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        let worst_logit = logits
            .iter()
            .zip(tract_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst_logit <= 1e-4,
            "largest logit difference {worst_logit}"
        );
    }
}
