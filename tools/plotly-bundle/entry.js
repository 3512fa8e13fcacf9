// The plotly.js the pages load: its core (scatter is in it) and the two other trace types they
// draw. tests/test_assets.py checks that every trace type static/js names is in the bundle.
var Plotly = require('plotly.js/lib/core');

Plotly.register([require('plotly.js/lib/bar'), require('plotly.js/lib/heatmap')]);

module.exports = Plotly;
