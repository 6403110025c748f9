// Run a TF.js graph model (model.json + shards) on tfjs-core CPU with tfjs-converter: the reference benchmarks/pose_models.py compares the conversions with.
// node tfjs_graph.js MODEL.json INPUT.bin H W OUTPUT.f32   (input: (N, H, W, 3) int32 RGB 0..255; writes every output tensor of each image, concatenated, float32)
// Needs: npm install @tensorflow/tfjs-core@4.22.0 @tensorflow/tfjs-backend-cpu@4.22.0 @tensorflow/tfjs-converter@4.22.0
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const { loadGraphModel } = require('@tensorflow/tfjs-converter');
const fs = require('fs');
const path = require('path');
const [modelPath, inputPath, h, w, outPath] = process.argv.slice(2);
(async () => {
  await tf.setBackend('cpu');
  const doc = JSON.parse(fs.readFileSync(modelPath));
  const specs = [], bufs = [];
  for (const g of doc.weightsManifest) {
    for (const p of g.paths) bufs.push(fs.readFileSync(path.join(path.dirname(modelPath), p)));
    specs.push(...g.weights);
  }
  const data = Buffer.concat(bufs);
  const handler = { load: async () => ({ modelTopology: doc.modelTopology, format: doc.format, generatedBy: doc.generatedBy,
    convertedBy: doc.convertedBy, weightSpecs: specs, weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength),
    signature: doc.signature, userDefinedMetadata: doc.userDefinedMetadata }) };
  const model = await loadGraphModel(handler);
  const raw = new Int32Array(fs.readFileSync(inputPath).buffer.slice(0));
  const n = raw.length / (h * w * 3);
  const outs = [];
  for (let i = 0; i < n; i++) {
    const x = tf.tensor4d(raw.slice(i * h * w * 3, (i + 1) * h * w * 3), [1, +h, +w, 3], 'int32');
    let y = await model.executeAsync(x);
    if (!Array.isArray(y)) y = [y];
    for (const t of y) outs.push(Buffer.from((await t.data()).buffer));
  }
  fs.writeFileSync(outPath, Buffer.concat(outs));
})();
