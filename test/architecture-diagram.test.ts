import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ARCHITECTURE_DOC, moduleEdges, renderGraph, withGraph } from '../scripts/module-graph.ts';

describe('living architecture', () => {
  it('the module graph in docs/architecture.md is the one the imports draw (run `npm run docs:graph`)', async () => {
    const edges = await moduleEdges();
    expect([...edges.keys()]).toEqual(expect.arrayContaining(['audit', 'identity', 'projects', 'tenancy']));
    expect(edges.get('audit')).toEqual([]); // the template module depends on no other module
    const doc = fs.readFileSync(ARCHITECTURE_DOC, 'utf8');
    expect(doc).toBe(withGraph(doc, renderGraph(edges)));
  });

  it('a new dependency changes the graph (the check can fail)', () => {
    const edges = new Map([['audit', []], ['projects', ['audit']]]);
    const before = renderGraph(edges);
    edges.set('audit', ['projects']);
    expect(renderGraph(edges)).not.toBe(before);
    expect(renderGraph(edges)).toContain('  audit --> projects');
  });
});
