// face-api's forward passes (its src/faceFeatureExtractor, faceLandmarkNet, faceExpressionNet, xception + ageGenderNet, faceRecognitionNet) on tfjs-core CPU: the reference benchmarks/landmarks68.py and benchmarks/faces.py compare the conversions with.
// node faceapi_nets.js NET MANIFEST INPUT.f32 OUTPUT.f32   (NET: landmarks68 | expression | age_gender | recognition; input (N, S, S, 3) RGB 0..255 float32, S = 112, recognition 150)
// Needs: npm install @tensorflow/tfjs-core@4.22.0 @tensorflow/tfjs-backend-cpu@4.22.0
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const fs = require('fs');
const [net, manifestPath, inputPath, outPath] = process.argv.slice(2);
(async () => {
  await tf.setBackend('cpu');
  const groups = JSON.parse(fs.readFileSync(manifestPath));
  const dir = require('path').dirname(manifestPath);
  const W = {};
  for (const g of groups) {
    const buf = Buffer.concat(g.paths.map((p) => fs.readFileSync(dir + '/' + p)));
    Object.assign(W, tf.io.decodeWeights(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength), g.weights));
  }
  const conv = (x, p, s) => tf.add(tf.conv2d(x, W[p + '/filters'], s, 'same'), W[p + '/bias']);
  const sep = (x, p, s) => tf.add(tf.separableConv2d(x, W[p + '/depthwise_filter'], W[p + '/pointwise_filter'], s, 'same'), W[p + '/bias']);
  const fc = (x, p) => tf.add(tf.matMul(x, W[p + '/weights']), W[p + '/bias']);
  const dense4 = (x, p, first) => {
    const out1 = tf.relu(first ? conv(x, p + '/conv0', [2, 2]) : sep(x, p + '/conv0', [2, 2]));
    const out2 = sep(out1, p + '/conv1', [1, 1]);
    const out3 = sep(tf.relu(tf.add(out1, out2)), p + '/conv2', [1, 1]);
    const out4 = sep(tf.relu(tf.add(out1, tf.add(out2, out3))), p + '/conv3', [1, 1]);
    return tf.relu(tf.add(out1, tf.add(out2, tf.add(out3, out4))));
  };
  const features = (x) => {  // FaceFeatureExtractor: 4 dense blocks + 7x7 average pool
    let out = dense4(x, 'dense0', true);
    out = dense4(out, 'dense1'); out = dense4(out, 'dense2'); out = dense4(out, 'dense3');
    return tf.reshape(tf.avgPool(out, [7, 7], [2, 2], 'valid'), [x.shape[0], -1]);
  };
  const reduction = (x, p, activate = true) => {
    let out = activate ? tf.relu(x) : x;
    out = sep(out, p + '/separable_conv0', [1, 1]);
    out = sep(tf.relu(out), p + '/separable_conv1', [1, 1]);
    out = tf.maxPool(out, [3, 3], [2, 2], 'same');
    return tf.add(out, conv(x, p + '/expansion_conv', [2, 2]));
  };
  const main = (x, p) => {
    let out = sep(tf.relu(x), p + '/separable_conv0', [1, 1]);
    out = sep(tf.relu(out), p + '/separable_conv1', [1, 1]);
    out = sep(tf.relu(out), p + '/separable_conv2', [1, 1]);
    return tf.add(out, x);
  };
  const scaled = (x, p, s, relu, pad = 'same') => {
    let out = tf.add(tf.conv2d(x, W[p + '/conv/filters'], s, pad), W[p + '/conv/bias']);
    out = tf.add(tf.mul(out, W[p + '/scale/weights']), W[p + '/scale/biases']);
    return relu ? tf.relu(out) : out;
  };
  const residual = (x, p) => tf.relu(tf.add(scaled(scaled(x, p + '/conv1', [1, 1], true), p + '/conv2', [1, 1], false), x));
  const residualDown = (x, p) => {
    let out = scaled(scaled(x, p + '/conv1', [2, 2], true, 'valid'), p + '/conv2', [1, 1], false);
    let pooled = tf.avgPool(x, 2, 2, 'valid');
    if (pooled.shape[1] !== out.shape[1] || pooled.shape[2] !== out.shape[2]) {
      out = tf.concat([out, tf.zeros([out.shape[0], 1, out.shape[2], out.shape[3]])], 1);
      out = tf.concat([out, tf.zeros([out.shape[0], out.shape[1], 1, out.shape[3]])], 2);
    }
    if (pooled.shape[3] !== out.shape[3]) pooled = tf.concat([pooled, tf.zeros(pooled.shape)], 3);
    return tf.relu(tf.add(pooled, out));
  };
  const size = net === 'recognition' ? 150 : 112;
  const raw = new Float32Array(fs.readFileSync(inputPath).buffer.slice(0));
  const n = raw.length / (size * size * 3);
  const x = tf.div(tf.sub(tf.tensor4d(raw, [n, size, size, 3]), tf.tensor1d([122.782, 117.001, 104.298])), 255);
  let y;
  if (net === 'landmarks68' || net === 'expression') {
    y = fc(features(x), 'fc');  // raw outputs (expression: logits)
  } else if (net === 'age_gender') {
    let out = tf.relu(conv(x, 'entry_flow/conv_in', [2, 2]));
    out = reduction(out, 'entry_flow/reduction_block_0', false);
    out = reduction(out, 'entry_flow/reduction_block_1');
    out = main(out, 'middle_flow/main_block_0'); out = main(out, 'middle_flow/main_block_1');
    out = reduction(out, 'exit_flow/reduction_block');
    out = tf.relu(sep(out, 'exit_flow/separable_conv', [1, 1]));
    const pooled = tf.reshape(tf.avgPool(out, [7, 7], [2, 2], 'valid'), [n, -1]);
    y = tf.concat([fc(pooled, 'fc/age'), fc(pooled, 'fc/gender')], 1);  // age, gender logits (male, female)
  } else if (net === 'recognition') {
    let out = tf.maxPool(scaled(x, 'conv32_down', [2, 2], true, 'valid'), 3, 2, 'valid');
    for (const p of ['conv32_1', 'conv32_2', 'conv32_3']) out = residual(out, p);
    out = residualDown(out, 'conv64_down');
    for (const p of ['conv64_1', 'conv64_2', 'conv64_3']) out = residual(out, p);
    out = residualDown(out, 'conv128_down');
    for (const p of ['conv128_1', 'conv128_2']) out = residual(out, p);
    out = residualDown(out, 'conv256_down');
    for (const p of ['conv256_1', 'conv256_2']) out = residual(out, p);
    out = residualDown(out, 'conv256_down_out');
    y = tf.matMul(tf.mean(out, [1, 2]), W['fc']);
  } else throw new Error('unknown net ' + net);
  fs.writeFileSync(outPath, Buffer.from((await y.data()).buffer));
})();
