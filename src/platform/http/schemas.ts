import { FormatRegistry, Type, type TSchema } from '@sinclair/typebox';
import { isUuid } from '../ids.ts';
import { isStrictDate, isStrictDateTime } from './input.ts';

/** RFC 9457 problem details, the body of every error response. */
export const ProblemSchema = Type.Object(
  {
    type: Type.String({ format: 'uri', description: 'Identifies the problem type' }),
    title: Type.String(),
    status: Type.Integer({ minimum: 400, maximum: 599 }),
    detail: Type.String(),
    code: Type.String({ description: "Stable machine-readable code, e.g. 'PROJECTS.TASK_NOT_FOUND'" }),
    requestId: Type.String(),
    instance: Type.Optional(Type.String()),
    errors: Type.Optional(
      Type.Array(Type.Object({ in: Type.String(), path: Type.String(), message: Type.String() }), {
        description: 'Validation failures, for HTTP.VALIDATION_FAILED',
      }),
    ),
  },
  { $id: 'Problem', additionalProperties: true, description: 'RFC 9457 problem details' },
);

export const Uuid = (description?: string) => Type.String({ format: 'uuid', description });

/**
 * A timestamp in a response: a `Date` in code, an ISO 8601 string on the wire (the response serializer
 * converts it). Request inputs stay `Type.String({ format: 'date-time' })`: validation yields strings.
 */
export const DateTime = () => Type.Unsafe<Date>({ type: 'string', format: 'date-time' });

/** A list page: `{ data, nextCursor }`; nextCursor is null on the last page. */
export const Page = <T extends TSchema>(item: T) =>
  Type.Object({ data: Type.Array(item), nextCursor: Type.Union([Type.String(), Type.Null()]) });

/**
 * TypeBox's own checker (`Value.Check`, used where a schema is checked outside a route: export filters,
 * connector configs) knows no string formats until they are registered: the same strict rules the route
 * validators apply (input.ts), registered once for the process.
 */
export function registerValueFormats(): void {
  if (!FormatRegistry.Has('uuid')) FormatRegistry.Set('uuid', isUuid);
  if (!FormatRegistry.Has('date-time')) FormatRegistry.Set('date-time', isStrictDateTime);
  if (!FormatRegistry.Has('date')) FormatRegistry.Set('date', isStrictDate);
}
// On import: every module that declares schemas imports this file, so no checker runs before it.
registerValueFormats();
