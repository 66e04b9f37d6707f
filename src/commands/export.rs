//! `mnist-cnn export MODEL OUT`: the model for other tools, as an ONNX graph or a safetensors
//! file of PyTorch-layout weights.

use std::io::Write;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::formats::{self, Format};

/// What `export` is asked to do.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The model: mnist-cnn's own file or a PyTorch safetensors.
    pub model: PathBuf,
    pub out: PathBuf,
    /// The format; `None`: from `out`'s extension.
    pub format: Option<Format>,
}

/// Writes the export (atomically: an existing `out` is replaced only by a whole new file)
/// and says what it wrote to `out`.
pub fn run(opts: &ExportOptions, out: &mut dyn Write) -> Result<()> {
    let format = opts
        .format
        .or_else(|| Format::from_extension(&opts.out))
        .ok_or_else(|| {
            Error::Usage(format!(
                "cannot tell the format of {} from its extension: name it .onnx or \
                 .safetensors, or give --format",
                opts.out.display()
            ))
        })?;
    crate::fsutil::check_writable_target(&opts.out)?;
    // Writing over the model itself would lose it for the price of a typo.
    let same = |a: &std::path::Path, b: &std::path::Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b);
    if same(&opts.model, &opts.out) {
        return Err(Error::Usage(format!(
            "{} is the model itself; export to another file",
            opts.out.display()
        )));
    }
    let model = formats::load(&opts.model)?;
    let bytes = formats::export(&model, format)?;
    crate::fsutil::write_atomic(&opts.out, &bytes)?;
    let what = match format {
        Format::Onnx => {
            "an ONNX graph (opset 13), input [N, 1, 28, 28] in [0, 1] → probabilities [N, 10]"
        }
        Format::Safetensors => "safetensors in PyTorch's layouts",
    };
    writeln!(
        out,
        "Exported {} to {}: {what}; {} bytes",
        opts.model.display(),
        opts.out.display(),
        crate::model::group_thousands(bytes.len())
    )
    .map_err(Error::stdout)
}
