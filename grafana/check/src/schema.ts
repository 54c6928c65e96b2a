// The dashboard schema the checks hold grafana/dashboards/*.json to: Grafana's
// published types from @grafana/schema (the classic dashboard model,
// schemaVersion 42 in 13.x), made JSON-shaped and narrowed to what this
// repository's dashboards use.
//
// - `Dashboard`, `Panel`, `RowPanel`, `VariableModel`, `AnnotationQuery` and
//   `FieldConfig` come from @grafana/schema; each panel's `options` and
//   `fieldConfig.defaults.custom` must match that panel plugin's generated
//   `Options` / `FieldConfig` (raw/composable/<plugin>/panelcfg), so a
//   misspelt key, a wrong type or an unknown enum value is an error.
// - Only the panel types listed in `VizPanel` are accepted; add one here
//   (with its panelcfg types) before using it in a dashboard.
// - Queries are Prometheus queries on the dashboard's `datasource` variable.
import type {
  AnnotationQuery,
  Dashboard,
  DataQuery,
  DataTransformerConfig,
  FieldConfig,
  FieldConfigSource,
  Panel,
  RowPanel,
  VariableModel,
} from '@grafana/schema';
import type * as BarGauge from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen';
import type * as PieChart from '@grafana/schema/dist/esm/raw/composable/piechart/panelcfg/x/PieChartPanelCfg_types.gen';
import type * as Stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as StateTimeline from '@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen';
import type * as Table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type * as TimeSeries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

/**
 * A type as it is written in JSON: a string enum becomes the union of its
 * values (`ThresholdsMode` -> 'absolute' | 'percentage'); numeric enums,
 * literal unions and everything else keep their type.
 */
export type AsJson<T> = T extends string
  ? `${T}`
  : T extends readonly (infer U)[]
    ? AsJson<U>[]
    : T extends object
      ? { [K in keyof T]: AsJson<T[K]> }
      : T;

/** Every panel and query uses the dashboard's data source variable. */
export interface PromDatasource {
  type: 'prometheus';
  uid: '${datasource}';
}

/**
 * A Prometheus query, as the Prometheus data source stores it: the common
 * `DataQuery` fields of @grafana/schema plus the Prometheus ones (Grafana's
 * packages/grafana-prometheus dataquery schema, which @grafana/schema does not
 * ship), `interval` being the query's "Min step".
 */
export type PromQuery = Omit<AsJson<DataQuery>, 'datasource' | 'key' | 'queryType'> & {
  datasource: PromDatasource;
  editorMode?: 'code' | 'builder';
  exemplar?: boolean;
  expr: string;
  format?: 'time_series' | 'table' | 'heatmap';
  instant?: boolean;
  interval?: string;
  legendFormat?: string;
  range?: boolean;
};

type JsonFieldConfigSource<Custom> = Omit<AsJson<FieldConfigSource>, 'defaults'> & {
  defaults: Omit<AsJson<FieldConfig>, 'custom'> &
    ([Custom] extends [never] ? { custom?: never } : { custom: AsJson<Custom> });
};

type PanelCommon = Omit<
  AsJson<Panel>,
  'datasource' | 'fieldConfig' | 'id' | 'options' | 'targets' | 'title' | 'transformations' | 'type' | 'gridPos'
> & {
  datasource: PromDatasource;
  gridPos: AsJson<NonNullable<Panel['gridPos']>>;
  id: number;
  targets: PromQuery[];
  title: string;
  transformations?: AsJson<DataTransformerConfig>[];
};

type Viz<Type extends string, Options, Custom = never> = PanelCommon & {
  type: Type;
  options: AsJson<Options>;
  fieldConfig: JsonFieldConfigSource<Custom>;
};

export type VizPanel =
  | Viz<'bargauge', BarGauge.Options>
  | Viz<'piechart', PieChart.Options, PieChart.FieldConfig>
  | Viz<'stat', Stat.Options>
  | Viz<'state-timeline', StateTimeline.Options, StateTimeline.FieldConfig>
  | Viz<'table', Table.Options, Table.FieldConfig>
  | Viz<'timeseries', TimeSeries.Options, TimeSeries.FieldConfig>;

export type Row = Omit<AsJson<RowPanel>, 'panels' | 'title' | 'gridPos'> & {
  gridPos: AsJson<NonNullable<RowPanel['gridPos']>>;
  panels: VizPanel[];
  title: string;
};

/** Grafana's built-in "Annotations & Alerts". */
type BuiltInAnnotation = Omit<AsJson<AnnotationQuery>, 'target'> & {
  builtIn: 1;
  datasource: { type: 'grafana'; uid: '-- Grafana --' };
};

/**
 * A Prometheus annotation: the query in `target`; the event title, text and
 * tags are rendered from the series labels by the Prometheus data source
 * (`titleFormat`, `textFormat`, `tagKeys`, which @grafana/schema does not
 * model).
 */
type PromAnnotation = Omit<AsJson<AnnotationQuery>, 'builtIn' | 'datasource' | 'target'> & {
  datasource: PromDatasource;
  target: Omit<PromQuery, 'datasource'>;
  tagKeys?: string;
  textFormat?: string;
  titleFormat?: string;
  useValueForTime?: boolean;
};

export type StrictDashboard = Omit<AsJson<Dashboard>, 'annotations' | 'panels' | 'templating' | 'title' | 'uid'> & {
  annotations: { list: (BuiltInAnnotation | PromAnnotation)[] };
  panels: (VizPanel | Row)[];
  templating: { list: AsJson<VariableModel>[] };
  title: string;
  uid: string;
};

/**
 * The JSON as `resolveJsonModule` types it: every string-like type widens to
 * `string` (a JSON import has no literal types), so this catches wrong shapes,
 * wrong value types and missing required fields, not enum values or unknown
 * keys (the generated check does).
 */
export type Widened<T> = T extends string
  ? string
  : T extends number
    ? number
    : T extends readonly (infer U)[]
      ? Widened<U>[]
      : T extends object
        ? { [K in keyof T]: Widened<T[K]> }
        : T;
