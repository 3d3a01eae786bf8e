/**
 * Directory publishes no events: SCIM changes are audited in their transaction, and the membership
 * changes they cause go through tenancy's facade (which audits them too).
 */
export {};
