/**
 * cdk8s constructs for aimesh: `AiService` and `Saga`, whose props are the spec types of
 * api/ (the schemas the CRDs, the operator and `aimesh validate` use), checked at synth
 * time with the same rules. An `AimeshChart` emits either the custom resources (for a
 * cluster running the operator) or, with `mode: 'rendered'`, exactly the objects the
 * operator would apply, through the same input gathering and render function.
 */
import { ApiObject, App, Chart, YamlOutputType, type ApiObjectMetadata, type ChartProps } from 'cdk8s';
import { Construct } from 'constructs';
import {
  GROUP_VERSION,
  formatErrors,
  validateResource,
  type AiService as AiServiceResource,
  type Resource,
  type Saga as SagaResource,
} from '../api/index.js';
import { renderAiService, renderInputs, type KubeObject, type RenderOptions } from '../render/index.js';
import type { AiServiceSpecProps, SagaSpecInput } from './spec-types.js';

/**
 * `AiServiceSpecProps` is the AiService spec as written in YAML (defaults may be left out)
 * and `SagaSpecInput` the Saga's, both with the API's field descriptions.
 */
export type { AiServiceSpecProps, SagaSpecInput };
type StepInput = SagaSpecInput['steps'][number];
type ActionInput = StepInput['action'];

/** Metadata a construct gives its resource. */
export interface ResourceMetadataProps {
  /** `metadata.name`, a DNS label. Default: the construct id. */
  readonly name?: string;
  /** Default: the chart's namespace, else `default`. */
  readonly namespace?: string;
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
}

export interface AiServiceProps extends ResourceMetadataProps {
  readonly spec: AiServiceSpecProps;
}

/**
 * A step service that is a plain Kubernetes Service, not an AiService of this app. It is
 * spelled out so that a mistyped AiService name cannot pass unnoticed.
 */
export interface KubernetesServiceRef {
  readonly kubernetesService: string;
}

/** A saga call whose `service` is an AiService construct (or a named Kubernetes Service). */
export type SagaActionProps = Omit<ActionInput, 'service'> & {
  readonly service: AiService | KubernetesServiceRef;
};

export type SagaStepProps = Omit<StepInput, 'action' | 'compensation'> & {
  readonly action: SagaActionProps;
  readonly compensation?: SagaActionProps;
};

export type SagaSpecProps = Omit<SagaSpecInput, 'orchestrator' | 'steps'> & {
  /** The AiService whose sidecars run the saga; in the saga's namespace. */
  readonly orchestrator: AiService;
  readonly steps: readonly SagaStepProps[];
};

export interface SagaProps extends ResourceMetadataProps {
  readonly spec: SagaSpecProps;
}

/**
 * What an AimeshChart emits:
 * - `custom-resources`: the AiService and Saga resources, for a cluster with the operator;
 * - `rendered`: what the operator would apply for them (Deployments, Services, ConfigMaps,
 *   Istio policies...), for clusters without the operator (GitOps).
 */
export type AimeshChartMode = 'custom-resources' | 'rendered';

export interface AimeshChartProps extends ChartProps {
  /** Default: `custom-resources`. */
  readonly mode?: AimeshChartMode;
  /** Render options in `rendered` mode (sidecar image, cluster and trust domain). */
  readonly render?: Omit<RenderOptions, 'owner'>;
}

/** A chart of aimesh resources; see AimeshChartMode for what it emits. */
export class AimeshChart extends Chart {
  readonly mode: AimeshChartMode;
  private readonly renderOptions: Omit<RenderOptions, 'owner'>;

  constructor(scope: Construct, id: string, props: AimeshChartProps = {}) {
    super(scope, id, props);
    this.mode = props.mode ?? 'custom-resources';
    this.renderOptions = props.render ?? {};
    this.node.addValidation({
      validate: () =>
        // That output type writes the chart's API objects directly, bypassing toJson.
        this.mode === 'rendered' &&
        App.of(this).yamlOutputType === YamlOutputType.FOLDER_PER_CHART_FILE_PER_RESOURCE
          ? ['rendered mode needs an App yamlOutputType other than FOLDER_PER_CHART_FILE_PER_RESOURCE']
          : [],
    });
  }

  /**
   * In rendered mode, the objects of this chart's AiServices, rendered from inputs
   * gathered over the whole app (a Saga in another chart of the same namespace counts, as
   * it does for the operator), after the chart's other API objects.
   */
  override toJson(): KubeObject[] {
    const own = super.toJson() as KubeObject[];
    if (this.mode !== 'rendered') return own;
    const resources = aimeshConstructs(this.node.root).map((c) => c.resource);
    return [
      ...own,
      ...renderInputs(resources)
        .filter((input) => Chart.of(constructOfResource.get(input.resource) as AiService) === this)
        .flatMap((input) => renderAiService(input, this.renderOptions)),
    ];
  }
}

/** An AiService: a workload with its sidecar, upstreams, providers and policies. */
export class AiService extends Construct {
  readonly name: string;
  /** The namespace its children go to (`default` when neither the props nor the chart say). */
  readonly namespace: string;
  private readonly explicitNamespace: string | undefined;
  private readonly props: AiServiceProps;

  constructor(scope: Construct, id: string, props: AiServiceProps) {
    super(scope, id);
    this.props = props;
    this.name = props.name ?? id;
    this.explicitNamespace = props.namespace ?? Chart.of(this).namespace;
    this.namespace = this.explicitNamespace ?? 'default';
    emitCustomResource(this, 'AiService', this.manifest());
    this.node.addValidation({ validate: () => validationErrors(this) });
  }

  /** The resource as validated: defaults filled in, as the operator sees it. */
  get resource(): AiServiceResource {
    return validResource(this) as AiServiceResource;
  }

  /** The custom resource as written, before defaults. */
  manifest(): Record<string, unknown> {
    return manifestOf('AiService', this.name, this.explicitNamespace, this.props, this.props.spec);
  }
}

/** A Saga: steps run in order by its orchestrator's sidecars, compensated in reverse. */
export class Saga extends Construct {
  readonly name: string;
  readonly namespace: string;
  private readonly explicitNamespace: string | undefined;
  private readonly props: SagaProps;

  constructor(scope: Construct, id: string, props: SagaProps) {
    super(scope, id);
    this.props = props;
    this.name = props.name ?? id;
    this.explicitNamespace = props.namespace ?? Chart.of(this).namespace;
    this.namespace = this.explicitNamespace ?? 'default';
    emitCustomResource(this, 'Saga', this.manifest());
    this.node.addValidation({
      validate: () => [...referenceErrors(this, props.spec), ...validationErrors(this)],
    });
  }

  get resource(): SagaResource {
    return validResource(this) as SagaResource;
  }

  manifest(): Record<string, unknown> {
    const { orchestrator, steps, ...rest } = this.props.spec;
    const spec = {
      ...rest,
      orchestrator: orchestrator.name,
      steps: steps.map(({ action, compensation, ...step }) => ({
        ...step,
        action: callOf(action),
        ...(compensation ? { compensation: callOf(compensation) } : {}),
      })),
    };
    return manifestOf('Saga', this.name, this.explicitNamespace, this.props, spec);
  }
}

type AimeshConstruct = AiService | Saga;

/** The CRDs' rule for metadata.name (tools/crd.ts): it names Services and ServiceAccounts. */
const RESOURCE_NAME = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;

const constructOfResource = new WeakMap<Resource, AimeshConstruct>();
const validated = new WeakMap<AimeshConstruct, Resource>();

function emitCustomResource(
  construct: AimeshConstruct,
  kind: 'AiService' | 'Saga',
  manifest: Record<string, unknown>,
): void {
  // Chart overrides instanceof with a predicate TypeScript does not narrow on.
  const chart = Chart.of(construct);
  if (chart instanceof AimeshChart && (chart as AimeshChart).mode === 'rendered') return;
  new ApiObject(construct, 'Resource', {
    apiVersion: GROUP_VERSION,
    kind,
    metadata: manifest.metadata as ApiObjectMetadata,
    spec: manifest.spec,
  });
}

function manifestOf(
  kind: string,
  name: string,
  namespace: string | undefined,
  props: ResourceMetadataProps,
  spec: unknown,
): Record<string, unknown> {
  return {
    apiVersion: GROUP_VERSION,
    kind,
    metadata: {
      name,
      ...(namespace ? { namespace } : {}),
      ...(props.labels ? { labels: props.labels } : {}),
      ...(props.annotations ? { annotations: props.annotations } : {}),
    },
    spec,
  };
}

function callOf({ service, ...call }: SagaActionProps): ActionInput {
  return { ...call, service: service instanceof AiService ? service.name : service.kubernetesService };
}

/**
 * The same checks as the API server: the schema through `validateResource` (as `aimesh
 * validate`), and the CRD's own rule on metadata.name (tools/crd.ts), which names Services.
 */
function validationErrors(construct: AimeshConstruct): string[] {
  const errors: string[] = [];
  if (!RESOURCE_NAME.test(construct.name) || construct.name.length > 63) {
    errors.push(
      `metadata.name: "${construct.name}" must be at most 63 lowercase letters, digits and "-", starting with a letter (set the name prop, or use such an id)`,
    );
  }
  const result = validateResource(construct.manifest());
  if (!result.ok) errors.push(...formatErrors(result.errors).split('\n'));
  return errors;
}

/** A Saga may only name AiServices of this app in its own namespace. */
function referenceErrors(saga: Saga, spec: SagaSpecProps): string[] {
  const errors: string[] = [];
  const check = (service: AiService, field: string) => {
    if (service.node.root !== saga.node.root) {
      errors.push(`${field}: AiService "${service.name}" belongs to another cdk8s App`);
    } else if (service.namespace !== saga.namespace) {
      errors.push(
        `${field}: AiService "${service.name}" is in namespace "${service.namespace}", the saga in "${saga.namespace}"; a saga only reaches services of its own namespace`,
      );
    }
  };
  check(spec.orchestrator, 'spec.orchestrator');
  spec.steps.forEach((step, index) => {
    for (const phase of ['action', 'compensation'] as const) {
      const service = step[phase]?.service;
      if (service instanceof AiService) check(service, `spec.steps[${index}].${phase}.service`);
    }
  });
  return errors;
}

function validResource(construct: AimeshConstruct): Resource {
  const cached = validated.get(construct);
  if (cached) return cached;
  const result = validateResource(construct.manifest());
  if (!result.ok) {
    throw new Error(
      `${construct.node.path}: invalid ${construct.constructor.name}\n${formatErrors(result.errors)}`,
    );
  }
  validated.set(construct, result.resource);
  constructOfResource.set(result.resource, construct);
  return result.resource;
}

function aimeshConstructs(root: Construct): AimeshConstruct[] {
  return root.node.findAll().filter((c): c is AimeshConstruct => c instanceof AiService || c instanceof Saga);
}
