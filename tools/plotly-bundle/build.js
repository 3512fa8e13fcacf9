// Builds ../../static/vendor/plotly-pages.min.js with plotly.js's own esbuild settings
// (its esbuild-config.js): `npm install && node build.js` in this folder (see README.md).
const path = require('path');
const esbuild = require('esbuild');
const { environmentPlugin } = require('esbuild-plugin-environment');
const InlineCSSPlugin = require('esbuild-plugin-inline-css');
const { version } = require('plotly.js/package.json');

// plotly.js inlines maplibre's 80 kB stylesheet for its map traces; the pages draw none.
const noMapStyles = {
  name: 'no-map-styles',
  setup(build) {
    build.onResolve({ filter: /maplibre-gl\.css$/ }, () => ({ path: 'maplibre-gl.css', namespace: 'empty' }));
    build.onLoad({ filter: /.*/, namespace: 'empty' }, () => ({ contents: '', loader: 'js' }));
  },
};

esbuild.build({
  entryPoints: [path.join(__dirname, 'entry.js')],
  outfile: path.join(__dirname, '..', '..', 'static', 'vendor', 'plotly-pages.min.js'),
  format: 'iife', globalName: 'Plotly', bundle: true, minify: true, sourcemap: false, target: 'es2016',
  plugins: [noMapStyles, InlineCSSPlugin(), environmentPlugin({ NODE_DEBUG: false })],
  alias: { stream: 'stream-browserify' },
  define: { global: 'window', 'define.amd': 'false' },
  banner: { js: `/**\n* plotly.js (scatter, bar, heatmap - minified) v${version}\n* Copyright 2012-2026, Plotly, Inc.\n`
                + '* All rights reserved.\n* Licensed under the MIT license\n*/' },
  logLevel: 'info',
}).catch(() => process.exit(1));
