// The dashboard JSON itself, imported as a module and assigned to Grafana's
// `Dashboard` type (JSON-widened, see schema.ts). The stricter check of the
// same file (literal values, unknown keys, per-panel options) is the generated
// ../generated/*.ts, written by ../gen-dashboard-ts.mjs.
import type { Dashboard } from '@grafana/schema';

import dashboard from '../../dashboards/hss-swr-exporter.json';
import type { Widened } from './schema.ts';

export const imported: Widened<Dashboard> = dashboard;
