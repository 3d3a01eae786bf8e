import type { TenantActorContext } from '../../../platform/http/actor.ts';
import { decodeCursor, listFingerprint, toPage } from '../../../platform/http/pagination.ts';
import { newId } from '../../../platform/ids.ts';
import { planLimitReached, preconditionFailed, projectKeyTaken, projectNotFound } from '../projects.errors.ts';
import { PROJECT_EVENTS, type ProjectCreatedPayload } from '../projects.events.ts';
import * as repo from '../projects.repo.ts';
import type { Project, ProjectChanges, ProjectSort } from '../projects.repo.ts';
import { actingUser, auditChanges, changedFields, etagOf, ifMatchHolds, type Page, type UseCaseContext } from './context.ts';
import { DELETED } from '../../../platform/cache/cache.ts';

export interface ProjectListParams {
  archived?: boolean;
  sort?: ProjectSort;
  limit: number;
  cursor?: string;
}

export interface NewProjectInput {
  key: string;
  name: string;
  description?: string;
}

export interface ProjectUseCases {
  createProject(ctx: TenantActorContext, input: NewProjectInput): Promise<Project>;
  getProject(tenantId: string, id: string): Promise<Project>;
  listProjects(tenantId: string, params: ProjectListParams): Promise<Page<Project>>;
  /** `ifMatch`: the client's ETag; stale → 412 (absent = unconditional). */
  updateProject(ctx: TenantActorContext, id: string, changes: ProjectChanges, ifMatch?: string): Promise<Project>;
  /** Deletes the project with its tasks and comments. */
  deleteProject(ctx: TenantActorContext, id: string, ifMatch?: string): Promise<void>;
}

export function projectUseCases(c: UseCaseContext): ProjectUseCases {
  const { scope } = c;

  return {
    getProject: c.getProject,

    async createProject(ctx, input) {
      const { tenantId } = ctx;
      const withinPlan = await c.deps.entitlements({ orgId: tenantId, action: 'projects.create' });
      return scope.withTenant(tenantId, async (trx) => {
        await repo.lockProjectCreation(trx, tenantId);
        const verdict = withinPlan(await repo.countProjects(trx, tenantId));
        if (!verdict.allowed) throw verdict.error ?? planLimitReached(verdict.reason);
        const project = await repo.insertProject(trx, {
          tenantId,
          id: newId(),
          key: input.key,
          name: input.name,
          description: input.description ?? '',
          createdBy: actingUser(ctx),
        });
        if (!project) throw projectKeyTaken(input.key);
        await c.record(trx, ctx, 'projects.project.create', { type: 'project', id: project.id }, auditChanges({}, input));
        const payload: ProjectCreatedPayload = { projectId: project.id, key: project.key, name: project.name, actorId: actingUser(ctx) };
        await c.publish(trx, ctx, PROJECT_EVENTS.projectCreated, payload);
        return project;
      });
    },

    async listProjects(tenantId, params) {
      const sort = params.sort ?? '-createdAt';
      const fingerprint = listFingerprint({ list: 'projects', sort, archived: params.archived });
      const after = params.cursor ? decodeCursor(params.cursor, fingerprint, repo.validProjectPosition(sort)) : undefined;
      const rows = await scope.withTenantRead(tenantId, (trx) =>
        repo.listProjects(trx, tenantId, { archived: params.archived, sort, limit: params.limit, after }),
      );
      return toPage(rows, params.limit, fingerprint, (p) => repo.projectPosition(p, sort));
    },

    async updateProject(ctx, id, changes, ifMatch) {
      const { tenantId } = ctx;
      const updated = await scope.withTenant(tenantId, async (trx) => {
        const current = await repo.findProject(trx, tenantId, id, { forUpdate: true });
        if (!current) throw projectNotFound();
        if (!ifMatchHolds(ifMatch, etagOf(current))) throw preconditionFailed(etagOf(current));
        const diff = changedFields(current, changes);
        if (Object.keys(diff).length === 0) return current;
        const project = await repo.updateProject(trx, tenantId, id, diff);
        await c.record(trx, ctx, 'projects.project.update', { type: 'project', id }, auditChanges(current, diff));
        await c.markStale(trx, ctx, { cache: 'projects', key: id, version: project.version });
        return project;
      });
      await c.invalidate(tenantId, { cache: 'projects', key: id, version: updated.version });
      return updated;
    },

    async deleteProject(ctx, id, ifMatch) {
      const { tenantId } = ctx;
      await scope.withTenant(tenantId, async (trx) => {
        const current = await repo.findProject(trx, tenantId, id, { forUpdate: true });
        if (!current) throw projectNotFound();
        if (!ifMatchHolds(ifMatch, etagOf(current))) throw preconditionFailed(etagOf(current));
        await repo.deleteProject(trx, tenantId, id);
        await c.record(trx, ctx, 'projects.project.delete', { type: 'project', id }, { key: current.key });
        await c.markStale(trx, ctx, { cache: 'projects', key: id, version: DELETED });
      });
      // Its tasks are gone too (cascade); cached tasks are re-checked against their project on read.
      await c.invalidate(tenantId, { cache: 'projects', key: id, version: DELETED });
    },
  };
}
