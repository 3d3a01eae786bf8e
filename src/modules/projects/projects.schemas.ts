import { Type, type Static } from '@sinclair/typebox';
import { pageQuery } from '../../platform/http/pagination.ts';
import { Page, Uuid, DateTime } from '../../platform/http/schemas.ts';
import { PROJECT_SORTS } from './projects.repo.ts';
import { PRIORITIES, TASK_SORTS, TASK_STATUSES } from './tasks.repo.ts';

const StringEnum = <T extends readonly string[]>(values: T, description?: string) =>
  Type.Unsafe<T[number]>({ type: 'string', enum: [...values], description });

/** A timestamp in responses: a `Date` in the service, an ISO 8601 string on the wire (the serializer calls toISOString). */
/** A timestamp in a query string, converted to a `Date` by the route. */
const TimestampParam = Type.String({ format: 'date-time' });
const DateOnly = Type.String({ format: 'date', description: 'YYYY-MM-DD' });
const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);

export const Status = StringEnum(TASK_STATUSES);
export const PriorityValue = StringEnum(PRIORITIES);
const Label = Type.String({ minLength: 1, maxLength: 50, pattern: '\\S', description: 'Case-insensitive tag (trimmed, lower-cased)' });
const Labels = Type.Array(Label, { maxItems: 20 });

export const ProjectSchema = Type.Object(
  {
    id: Uuid(),
    key: Type.String({ description: 'Prefix of task keys, e.g. PLN' }),
    name: Type.String(),
    description: Type.String(),
    archived: Type.Boolean(),
    version: Type.Integer({ description: 'Also the ETag: "v<version>"' }),
    createdBy: Uuid(),
    createdAt: DateTime(),
    updatedAt: DateTime(),
  },
  { additionalProperties: false },
);

export const TaskSchema = Type.Object(
  {
    id: Uuid(),
    projectId: Uuid(),
    number: Type.Integer({ description: 'Gap-free sequence within the project' }),
    key: Type.String({ description: 'PROJECTKEY-number, e.g. PLN-42' }),
    title: Type.String(),
    description: Type.String(),
    status: Status,
    priority: PriorityValue,
    assigneeId: Type.Union([Uuid(), Type.Null()]),
    labels: Type.Array(Type.String()),
    dueDate: Nullable(DateOnly),
    version: Type.Integer(),
    createdBy: Uuid(),
    createdAt: DateTime(),
    updatedAt: DateTime(),
  },
  { additionalProperties: false },
);

export const CommentSchema = Type.Object(
  { id: Uuid(), taskId: Uuid(), authorId: Uuid(), body: Type.String(), createdAt: DateTime() },
  { additionalProperties: false },
);

export const ProjectKey = Type.String({ pattern: '^[A-Z][A-Z0-9]{1,9}$', description: '2–10 upper-case letters/digits, starting with a letter' });

export const CreateProjectBody = Type.Object(
  {
    key: ProjectKey,
    name: Type.String({ minLength: 1, maxLength: 100, pattern: '\\S' }),
    description: Type.Optional(Type.String({ maxLength: 2000 })),
  },
  { additionalProperties: false },
);

export const UpdateProjectBody = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 100, pattern: '\\S' })),
    description: Type.Optional(Type.String({ maxLength: 2000 })),
    archived: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false, description: 'Only the fields to change; an empty object changes nothing' },
);

const taskFields = {
  title: Type.String({ minLength: 1, maxLength: 200, pattern: '\\S' }),
  description: Type.String({ maxLength: 20000 }),
  status: Status,
  priority: PriorityValue,
  assigneeId: Type.Union([Uuid(), Type.Null()], { description: 'A member of the organization, or null' }),
  labels: Labels,
  dueDate: Nullable(DateOnly),
};

export const CreateTaskBody = Type.Object(
  {
    title: taskFields.title,
    description: Type.Optional(taskFields.description),
    status: Type.Optional(taskFields.status),
    priority: Type.Optional(taskFields.priority),
    assigneeId: Type.Optional(taskFields.assigneeId),
    labels: Type.Optional(taskFields.labels),
    dueDate: Type.Optional(taskFields.dueDate),
  },
  { additionalProperties: false },
);

export const UpdateTaskBody = Type.Partial(Type.Object(taskFields), {
  additionalProperties: false,
  description: 'Only the fields to change; an empty object changes nothing',
});

export const CreateCommentBody = Type.Object(
  { body: Type.String({ minLength: 1, maxLength: 10000 }) },
  { additionalProperties: false },
);

export const OrgParams = Type.Object({ orgId: Uuid() });
export const ProjectParams = Type.Object({ orgId: Uuid(), projectId: Uuid() });
export const TaskParams = Type.Object({ orgId: Uuid(), taskId: Uuid() });

export const ProjectListQuery = Type.Object(
  {
    archived: Type.Optional(Type.Boolean()),
    sort: Type.Optional(StringEnum(PROJECT_SORTS, 'Default -createdAt')),
    ...pageQuery,
  },
  { additionalProperties: false },
);

export const TaskListQuery = Type.Object(
  {
    status: Type.Optional(Type.Array(Status, { maxItems: 4, description: 'Repeat for several: status=todo&status=done' })),
    assignee: Type.Optional(Type.Union([Uuid(), Type.Literal('none')], { description: 'A user id, or none for unassigned' })),
    label: Type.Optional(Label),
    dueBefore: Type.Optional(DateOnly),
    dueAfter: Type.Optional(DateOnly),
    updatedSince: Type.Optional(TimestampParam),
    q: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'Full-text search over title and description' })),
    sort: Type.Optional(StringEnum(TASK_SORTS, 'Default -number (newest first)')),
    ...pageQuery,
  },
  { additionalProperties: false },
);

export const CommentListQuery = Type.Object({ ...pageQuery }, { additionalProperties: false });

export const ProjectPage = Page(ProjectSchema);
export const TaskPage = Page(TaskSchema);
export const CommentPage = Page(CommentSchema);

export const PreconditionHeaders = Type.Object({
  'if-match': Type.Optional(Type.String({ maxLength: 512, description: 'ETag from a previous read; 412 when it is stale' })),
});
export const ConditionalGetHeaders = Type.Object({
  'if-none-match': Type.Optional(Type.String({ maxLength: 512, description: 'ETag from a previous read; 304 when unchanged' })),
});

export type CreateTaskInput = Static<typeof CreateTaskBody>;
