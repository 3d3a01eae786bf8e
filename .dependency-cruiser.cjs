/** Module boundaries from ARCHITECTURE.md, enforced in `npm run lint`. */
module.exports = {
  forbidden: [
    {
      name: 'module-through-index-only',
      comment: 'A module imports another module only through that module\'s index.ts.',
      severity: 'error',
      from: { path: '(^|/)src/modules/([^/]+)/' },
      to: {
        path: '(^|/)src/modules/[^/]+/.+',
        pathNot: ['(^|/)src/modules/$2/', '(^|/)src/modules/[^/]+/index\\.ts$'],
      },
    },
    {
      name: 'platform-not-to-modules',
      comment: 'The platform kernel never depends on a module.',
      severity: 'error',
      from: { path: '(^|/)src/platform/' },
      to: { path: '(^|/)src/modules/' },
    },
    {
      name: 'modules-not-to-composition',
      comment: 'Modules never import the composition root or entry points (app, main, compose, worker, cli, seed): those import modules.',
      severity: 'error',
      // Tests may boot the whole composition.
      from: { path: '(^|/)src/(modules|platform)/', pathNot: '\\.test\\.ts$' },
      to: { path: '(^|/)src/(app|main|compose|worker|cli|seed)\\.ts$' },
    },
    {
      name: 'no-circular',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)node_modules/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: require('node:path').join(__dirname, 'tsconfig.json') },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
  },
};
