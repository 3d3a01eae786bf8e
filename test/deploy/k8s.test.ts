import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { Job } from 'kubernetes-models/batch/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { Service } from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';

/**
 * deploy/k8s as a cluster would receive it: rendered with `kubectl kustomize`, every object validated
 * against the Kubernetes API schema (kubernetes-models; offline), and the invariants pods need to start
 * and to be operated checked one by one.
 */
// Bounded: a kubectl that hangs must fail the test, not stall the run. Some kubectl builds are a dispatcher
// (Google Cloud SDK) that may look for updates over the network first; that check is turned off.
const KUBECTL_ENV = { ...process.env, CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK: '1' };
const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8', timeout: 30_000, env: KUBECTL_ENV }).status === 0;

// Peak RSS of one API process under the benchmark's load (README "P7", measured 544 MB on 2026-12-01). The limit must be
// above it with headroom, or the kernel kills pods at peak.
const API_PEAK_RSS_MIB = 544;
const MODELS: Record<string, new (o: any) => { validate(): void }> = {
  Job,
  Deployment,
  HorizontalPodAutoscaler,
  PodDisruptionBudget,
  Service,
};

type Obj = { kind: string; metadata: { name: string; labels?: Record<string, string> }; spec: any };
type Container = { name: string; image: string; env?: Array<{ name: string; value?: string }>; [k: string]: any };

function render(overlay: string): Obj[] {
  const r = spawnSync('kubectl', ['kustomize', `deploy/k8s/overlays/${overlay}`], { encoding: 'utf8', timeout: 60_000, env: KUBECTL_ENV });
  if (r.status !== 0) throw new Error(`kubectl kustomize failed: ${r.stderr}`);
  return parseAllDocuments(r.stdout).map((d) => d.toJS() as Obj);
}

const mib = (q: string) => {
  const m = /^(\d+)(Mi|Gi)$/.exec(q);
  if (!m) throw new Error(`memory quantity ${q} is not in Mi/Gi`);
  return Number(m[1]) * (m[2] === 'Gi' ? 1024 : 1);
};
const env = (c: Container, name: string) => c.env?.find((e) => e.name === name)?.value;

describe.skipIf(!kubectl).each(['prod', 'dev'])('deploy/k8s/overlays/%s (kubectl kustomize)', (overlay) => {
  const objects = kubectl ? render(overlay) : [];
  const byKind = (kind: string) => objects.filter((o) => o.kind === kind);
  const one = (kind: string, name: string) => {
    const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
    if (!o) throw new Error(`${kind}/${name} is not rendered`);
    return o;
  };
  const workloads = () => [...byKind('Deployment'), ...byKind('Job')];

  it('every object is valid against the Kubernetes schema', () => {
    expect(objects.map((o) => o.kind).sort()).toEqual(
      ['Deployment', 'Deployment', 'HorizontalPodAutoscaler', 'Job', 'PodDisruptionBudget', 'PodDisruptionBudget', 'Service'],
    );
    for (const o of objects) {
      const Model = MODELS[o.kind];
      expect(Model, o.kind).toBeDefined();
      expect(() => new Model!(o).validate(), `${o.kind}/${o.metadata.name}`).not.toThrow();
    }
  });

  it('one pinned image everywhere (no latest), and the migration Job is named after that release', () => {
    const images = workloads().flatMap((w) => [...(w.spec.template.spec.initContainers ?? []), ...w.spec.template.spec.containers].map((c: Container) => c.image));
    expect(new Set(images).size).toBe(1);
    const [image] = images;
    const tag = /:([^:/]+)$/.exec(image!)?.[1];
    expect(tag, image).toBeDefined();
    expect(tag).not.toBe('latest');
    const [job] = byKind('Job');
    expect(job!.metadata.name).toBe(`plinth-migrate-${tag}`);
  });

  it('pods start with a read-only root filesystem: numeric non-root user, writable /tmp in every container', () => {
    for (const w of workloads()) {
      const pod = w.spec.template.spec;
      expect(pod.securityContext?.runAsNonRoot, w.metadata.name).toBe(true);
      expect(Number.isInteger(pod.securityContext?.runAsUser) && pod.securityContext.runAsUser > 0, w.metadata.name).toBe(true);
      const tmpVolume = pod.volumes?.find((v: any) => v.emptyDir !== undefined);
      expect(tmpVolume, `${w.metadata.name}: an emptyDir volume`).toBeDefined();
      for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
        const where = `${w.metadata.name}/${c.name}`;
        expect(c.securityContext?.readOnlyRootFilesystem, where).toBe(true);
        expect(c.securityContext?.allowPrivilegeEscalation, where).toBe(false);
        expect(c.volumeMounts?.some((m: any) => m.mountPath === '/tmp' && m.name === tmpVolume.name), `${where} mounts /tmp`).toBe(true);
        expect(c.resources?.requests?.memory && c.resources?.limits?.memory, `${where} resources`).toBeTruthy();
      }
    }
  });

  it('the migration Job runs migrate, bounded; Deployments wait for the schema and never migrate themselves', () => {
    const [job] = byKind('Job');
    expect(job!.spec.template.spec.containers[0].args).toEqual(['migrate']);
    expect(job!.spec.template.spec.restartPolicy).toBe('Never');
    expect(job!.spec.backoffLimit).toBeGreaterThan(0);
    expect(job!.spec.activeDeadlineSeconds).toBeGreaterThan(0);
    for (const d of byKind('Deployment')) {
      const init = d.spec.template.spec.initContainers ?? [];
      expect(init.map((c: Container) => c.args), d.metadata.name).toContainEqual(['migrate', '--check', '--wait=600']);
      for (const c of d.spec.template.spec.containers) expect(env(c, 'MIGRATE_ON_START'), d.metadata.name).toBe('false');
    }
  });

  it('no replicas on a Deployment an HPA scales; every Deployment has a PDB selecting its pods', () => {
    for (const hpa of byKind('HorizontalPodAutoscaler')) {
      const target = one('Deployment', hpa.spec.scaleTargetRef.name);
      expect(target.spec.replicas, `${target.metadata.name} is scaled by HPA ${hpa.metadata.name}`).toBeUndefined();
    }
    for (const d of byKind('Deployment')) {
      const labels = d.spec.template.metadata.labels;
      const pdb = byKind('PodDisruptionBudget').find((p) => Object.entries(p.spec.selector.matchLabels).every(([k, v]) => labels[k] === v));
      expect(pdb, `a PDB for ${d.metadata.name}`).toBeDefined();
    }
  });

  it('API: probes on /readyz and /livez, memory limit above the measured peak RSS, grace period covers the drain', () => {
    const api = one('Deployment', 'plinth-api');
    const c = api.spec.template.spec.containers[0] as Container;
    expect(c.readinessProbe.httpGet.path).toBe('/readyz');
    expect(c.livenessProbe.httpGet.path).toBe('/livez');
    expect(mib(c.resources.limits.memory)).toBeGreaterThanOrEqual(API_PEAK_RSS_MIB * 1.5);
    const drainS = (Number(env(c, 'SHUTDOWN_DELAY_MS')) + Number(env(c, 'SHUTDOWN_GRACE_MS'))) / 1000;
    expect(api.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThan(drainS);
  });

  it('worker: metrics port declared and annotated for discovery, liveness and startup probes on it, grace period', () => {
    const worker = one('Deployment', 'plinth-worker');
    const c = worker.spec.template.spec.containers[0] as Container;
    const metricsPort = Number(env(c, 'METRICS_PORT'));
    expect(c.ports).toContainEqual({ containerPort: metricsPort, name: 'metrics' });
    const annotations = worker.spec.template.metadata.annotations;
    expect(annotations['prometheus.io/scrape']).toBe('true');
    expect(Number(annotations['prometheus.io/port'])).toBe(metricsPort);
    for (const probe of [c.livenessProbe, c.startupProbe]) expect(probe.httpGet).toEqual({ path: '/livez', port: 'metrics' });
    expect(worker.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThan(Number(env(c, 'SHUTDOWN_GRACE_MS')) / 1000);
  });

  it('pods carry the labels the alert rules and pod discovery select on (app=plinth)', () => {
    const rules = fs.readFileSync('deploy/prometheus/plinth.rules.yml', 'utf8');
    expect(rules).toMatch(/expr: up\{app="plinth"\} == 0/);
    const discovery = fs.readFileSync('deploy/prometheus/kubernetes.yml', 'utf8');
    expect(discovery).toMatch(/action: labelmap\s+regex: __meta_kubernetes_pod_label_\(\.\+\)/);
    for (const d of byKind('Deployment')) {
      expect(d.spec.template.metadata.labels.app).toBe('plinth');
      expect(d.spec.template.metadata.annotations['prometheus.io/scrape']).toBe('true');
    }
  });

  it('autoscaling: the HPA keeps more pods than the PDB must keep available (drains never block), scales down slowly', () => {
    const hpa = one('HorizontalPodAutoscaler', 'plinth-api');
    const pdb = one('PodDisruptionBudget', 'plinth-api');
    expect(hpa.spec.minReplicas).toBeGreaterThan(pdb.spec.minAvailable);
    expect(hpa.spec.behavior.scaleDown.stabilizationWindowSeconds).toBeGreaterThanOrEqual(300);
    const objectsNamespaces = new Set(objects.map((o) => (o.metadata as { namespace?: string }).namespace));
    expect([...objectsNamespaces]).toEqual([overlay === 'prod' ? 'plinth' : 'plinth-dev']);
    if (overlay === 'prod') {
      // Scales on the request rate per pod (prometheus-adapter publishes it) besides CPU.
      const pods = hpa.spec.metrics.find((m: { type: string }) => m.type === 'Pods');
      expect(pods?.pods.metric.name).toBe('plinth_http_requests_per_second');
      const adapter = fs.readFileSync('deploy/k8s/prometheus-adapter-rules.yaml', 'utf8');
      expect(adapter).toContain(`as: "${pods.pods.metric.name}"`);
    }
  });
});
