// face-api FaceLandmark68Net forward (its src/faceFeatureExtractor + src/faceLandmarkNet) on tfjs-core CPU: the reference benchmarks/landmarks68.py compares the conversion with. Needs: npm install @tensorflow/tfjs-core@4.22.0 @tensorflow/tfjs-backend-cpu@4.22.0
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const fs = require('fs');
const [manifestPath, inputPath, outPath] = process.argv.slice(2);
(async () => {
  await tf.setBackend('cpu');
  const groups = JSON.parse(fs.readFileSync(manifestPath));
  const dir = require('path').dirname(manifestPath);
  const W = {};
  for (const g of groups) {
    const bufs = g.paths.map((p) => fs.readFileSync(dir + '/' + p));
    const buf = Buffer.concat(bufs);
    const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
    Object.assign(W, tf.io.decodeWeights(ab, g.weights));
  }
  const sep = (x, p, s) => tf.add(tf.separableConv2d(x, W[p + '/depthwise_filter'], W[p + '/pointwise_filter'], s, 'same'), W[p + '/bias']);
  const dense4 = (x, p, first) => {
    const out1 = tf.relu(first ? tf.add(tf.conv2d(x, W[p + '/conv0/filters'], [2, 2], 'same'), W[p + '/conv0/bias']) : sep(x, p + '/conv0', [2, 2]));
    const out2 = sep(out1, p + '/conv1', [1, 1]);
    const in3 = tf.relu(tf.add(out1, out2));
    const out3 = sep(in3, p + '/conv2', [1, 1]);
    const in4 = tf.relu(tf.add(out1, tf.add(out2, out3)));
    const out4 = sep(in4, p + '/conv3', [1, 1]);
    return tf.relu(tf.add(out1, tf.add(out2, tf.add(out3, out4))));
  };
  const raw = new Float32Array(fs.readFileSync(inputPath).buffer.slice(0));
  const n = raw.length / (112 * 112 * 3);
  const x = tf.tensor4d(raw, [n, 112, 112, 3]);  // RGB 0..255
  const norm = tf.div(tf.sub(x, tf.tensor1d([122.782, 117.001, 104.298])), 255);
  let out = dense4(norm, 'dense0', true);
  out = dense4(out, 'dense1'); out = dense4(out, 'dense2'); out = dense4(out, 'dense3');
  out = tf.avgPool(out, [7, 7], [2, 2], 'valid');
  const fc = tf.add(tf.matMul(tf.reshape(out, [n, -1]), W['fc/weights']), W['fc/bias']);
  fs.writeFileSync(outPath, Buffer.from((await fc.data()).buffer));
})();
