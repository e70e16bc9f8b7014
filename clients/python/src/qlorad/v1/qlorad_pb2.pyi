from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
EXPORT_FORMAT_GGUF_LORA: ExportFormat
EXPORT_FORMAT_GGUF_MERGED: ExportFormat
EXPORT_FORMAT_HF_MERGED: ExportFormat
EXPORT_FORMAT_UNSPECIFIED: ExportFormat
EXPORT_TYPE_BF16: ExportType
EXPORT_TYPE_F16: ExportType
EXPORT_TYPE_F32: ExportType
EXPORT_TYPE_Q4_0: ExportType
EXPORT_TYPE_Q8_0: ExportType
EXPORT_TYPE_UNSPECIFIED: ExportType
FINISH_REASON_EOS: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_UNSPECIFIED: FinishReason
JOB_KIND_EVALUATE: JobKind
JOB_KIND_EXPORT: JobKind
JOB_KIND_GENERATE: JobKind
JOB_KIND_QUANTIZE: JobKind
JOB_KIND_TRAIN: JobKind
JOB_KIND_UNSPECIFIED: JobKind
JOB_STATE_CANCELLED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_UNSPECIFIED: JobState
LOG_LEVEL_INFO: LogLevel
LOG_LEVEL_UNSPECIFIED: LogLevel
LOG_LEVEL_WARNING: LogLevel
LORA_DTYPE_BF16: LoraDtype
LORA_DTYPE_F32: LoraDtype
LORA_DTYPE_UNSPECIFIED: LoraDtype
LR_SCHEDULER_CONSTANT: LrScheduler
LR_SCHEDULER_COSINE: LrScheduler
LR_SCHEDULER_LINEAR: LrScheduler
LR_SCHEDULER_UNSPECIFIED: LrScheduler
QUANT_TYPE_FP4: QuantType
QUANT_TYPE_NF4: QuantType
QUANT_TYPE_UNSPECIFIED: QuantType

class CancelJobRequest(_message.Message):
    __slots__ = ["job_id"]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ["job"]
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ["content", "role"]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    content: str
    role: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ["is_final", "path", "step"]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    is_final: bool
    path: str
    step: int
    def __init__(self, path: _Optional[str] = ..., step: _Optional[int] = ..., is_final: bool = ...) -> None: ...

class EstimateMemoryRequest(_message.Message):
    __slots__ = ["base_model_path", "blocksize", "double_quant", "hyperparameters", "lora", "model_config_json", "quant_type"]
    BASE_MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    BLOCKSIZE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_QUANT_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    MODEL_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    QUANT_TYPE_FIELD_NUMBER: _ClassVar[int]
    base_model_path: str
    blocksize: int
    double_quant: bool
    hyperparameters: Hyperparameters
    lora: LoraConfig
    model_config_json: str
    quant_type: QuantType
    def __init__(self, base_model_path: _Optional[str] = ..., model_config_json: _Optional[str] = ..., lora: _Optional[_Union[LoraConfig, _Mapping]] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., quant_type: _Optional[_Union[QuantType, str]] = ..., blocksize: _Optional[int] = ..., double_quant: bool = ...) -> None: ...

class EstimateMemoryResponse(_message.Message):
    __slots__ = ["bytes_by_category", "total_bytes"]
    class BytesByCategoryEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    BYTES_BY_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    bytes_by_category: _containers.ScalarMap[str, int]
    total_bytes: int
    def __init__(self, bytes_by_category: _Optional[_Mapping[str, int]] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class EvalResult(_message.Message):
    __slots__ = ["examples", "loss", "perplexity", "samples", "step", "token_accuracy", "tokens"]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    PERPLEXITY_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    examples: int
    loss: float
    perplexity: float
    samples: _containers.RepeatedCompositeFieldContainer[GeneratedSample]
    step: int
    token_accuracy: float
    tokens: int
    def __init__(self, loss: _Optional[float] = ..., perplexity: _Optional[float] = ..., token_accuracy: _Optional[float] = ..., tokens: _Optional[int] = ..., samples: _Optional[_Iterable[_Union[GeneratedSample, _Mapping]]] = ..., examples: _Optional[int] = ..., step: _Optional[int] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ["adapter_path", "base_model_path", "batch_size", "dataset_path", "max_new_tokens", "max_seq_len", "request_id", "sample_prompts"]
    ADAPTER_PATH_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    DATASET_PATH_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LEN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    adapter_path: str
    base_model_path: str
    batch_size: int
    dataset_path: str
    max_new_tokens: int
    max_seq_len: int
    request_id: str
    sample_prompts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, base_model_path: _Optional[str] = ..., adapter_path: _Optional[str] = ..., dataset_path: _Optional[str] = ..., max_seq_len: _Optional[int] = ..., batch_size: _Optional[int] = ..., sample_prompts: _Optional[_Iterable[str]] = ..., max_new_tokens: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ["adapter_path", "base_model_path", "format", "output_path", "overwrite", "request_id", "type"]
    ADAPTER_PATH_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    adapter_path: str
    base_model_path: str
    format: ExportFormat
    output_path: str
    overwrite: bool
    request_id: str
    type: ExportType
    def __init__(self, base_model_path: _Optional[str] = ..., adapter_path: _Optional[str] = ..., output_path: _Optional[str] = ..., format: _Optional[_Union[ExportFormat, str]] = ..., type: _Optional[_Union[ExportType, str]] = ..., overwrite: bool = ..., request_id: _Optional[str] = ...) -> None: ...

class ExportResult(_message.Message):
    __slots__ = ["bytes", "f16_fallbacks", "format", "merged_linears", "output_path", "tensors", "type"]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    F16_FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MERGED_LINEARS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    f16_fallbacks: _containers.RepeatedScalarFieldContainer[str]
    format: ExportFormat
    merged_linears: int
    output_path: str
    tensors: int
    type: ExportType
    def __init__(self, output_path: _Optional[str] = ..., format: _Optional[_Union[ExportFormat, str]] = ..., type: _Optional[_Union[ExportType, str]] = ..., tensors: _Optional[int] = ..., merged_linears: _Optional[int] = ..., f16_fallbacks: _Optional[_Iterable[str]] = ..., bytes: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ["adapter_path", "base_model_path", "ignore_eos", "max_new_tokens", "messages", "prompt", "request_id", "seed", "stop", "temperature", "top_k", "top_p"]
    ADAPTER_PATH_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    adapter_path: str
    base_model_path: str
    ignore_eos: bool
    max_new_tokens: int
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    prompt: str
    request_id: str
    seed: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    temperature: float
    top_k: int
    top_p: float
    def __init__(self, base_model_path: _Optional[str] = ..., adapter_path: _Optional[str] = ..., prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., max_new_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., seed: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., ignore_eos: bool = ..., request_id: _Optional[str] = ...) -> None: ...

class GenerateResult(_message.Message):
    __slots__ = ["decode_tokens_per_second", "finish_reason", "generated_tokens", "prefill_tokens_per_second", "prompt_tokens", "text", "token_ids"]
    DECODE_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    decode_tokens_per_second: float
    finish_reason: FinishReason
    generated_tokens: int
    prefill_tokens_per_second: float
    prompt_tokens: int
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, text: _Optional[str] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., prompt_tokens: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., token_ids: _Optional[_Iterable[int]] = ..., prefill_tokens_per_second: _Optional[float] = ..., decode_tokens_per_second: _Optional[float] = ...) -> None: ...

class GeneratedSample(_message.Message):
    __slots__ = ["completion", "prompt"]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    completion: str
    prompt: str
    def __init__(self, prompt: _Optional[str] = ..., completion: _Optional[str] = ...) -> None: ...

class GeneratedText(_message.Message):
    __slots__ = ["text", "token_ids"]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ["job_id"]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class Hyperparameters(_message.Message):
    __slots__ = ["epochs", "eval_steps", "gradient_accumulation_steps", "gradient_checkpointing", "learning_rate", "lora_dtype", "lr_scheduler", "max_grad_norm", "max_seq_len", "max_steps", "micro_batch_size", "optimizer_gpu_budget_bytes", "packing", "save_steps", "seed", "warmup_steps", "weight_decay"]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    EVAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_ACCUMULATION_STEPS_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    LORA_DTYPE_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LEN_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_GPU_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    SAVE_STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    epochs: float
    eval_steps: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool
    learning_rate: float
    lora_dtype: LoraDtype
    lr_scheduler: LrScheduler
    max_grad_norm: float
    max_seq_len: int
    max_steps: int
    micro_batch_size: int
    optimizer_gpu_budget_bytes: int
    packing: bool
    save_steps: int
    seed: int
    warmup_steps: int
    weight_decay: float
    def __init__(self, learning_rate: _Optional[float] = ..., lr_scheduler: _Optional[_Union[LrScheduler, str]] = ..., warmup_steps: _Optional[int] = ..., max_steps: _Optional[int] = ..., epochs: _Optional[float] = ..., micro_batch_size: _Optional[int] = ..., gradient_accumulation_steps: _Optional[int] = ..., max_seq_len: _Optional[int] = ..., max_grad_norm: _Optional[float] = ..., weight_decay: _Optional[float] = ..., seed: _Optional[int] = ..., gradient_checkpointing: bool = ..., save_steps: _Optional[int] = ..., eval_steps: _Optional[int] = ..., optimizer_gpu_budget_bytes: _Optional[int] = ..., packing: bool = ..., lora_dtype: _Optional[_Union[LoraDtype, str]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ["cancel_requested", "created_time", "error", "evaluate", "export", "finished_time", "generate", "job_id", "kind", "last_event", "last_seq", "owner", "quantize", "started_time", "state", "summary", "train"]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CREATED_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_FIELD_NUMBER: _ClassVar[int]
    EXPORT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_TIME_FIELD_NUMBER: _ClassVar[int]
    GENERATE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    QUANTIZE_FIELD_NUMBER: _ClassVar[int]
    STARTED_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    cancel_requested: bool
    created_time: _timestamp_pb2.Timestamp
    error: JobError
    evaluate: EvaluateRequest
    export: ExportRequest
    finished_time: _timestamp_pb2.Timestamp
    generate: GenerateRequest
    job_id: str
    kind: JobKind
    last_event: JobEvent
    last_seq: int
    owner: str
    quantize: QuantizeRequest
    started_time: _timestamp_pb2.Timestamp
    state: JobState
    summary: str
    train: TrainRequest
    def __init__(self, job_id: _Optional[str] = ..., kind: _Optional[_Union[JobKind, str]] = ..., state: _Optional[_Union[JobState, str]] = ..., created_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., started_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., finished_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., summary: _Optional[str] = ..., last_seq: _Optional[int] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., last_event: _Optional[_Union[JobEvent, _Mapping]] = ..., owner: _Optional[str] = ..., cancel_requested: bool = ..., quantize: _Optional[_Union[QuantizeRequest, _Mapping]] = ..., train: _Optional[_Union[TrainRequest, _Mapping]] = ..., evaluate: _Optional[_Union[EvaluateRequest, _Mapping]] = ..., generate: _Optional[_Union[GenerateRequest, _Mapping]] = ..., export: _Optional[_Union[ExportRequest, _Mapping]] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ["code", "message"]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ["checkpoint", "error", "eval_result", "export_result", "generate_result", "generated_text", "job_id", "log", "progress", "quantize_result", "seq", "state", "time", "train_metrics", "train_result"]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EVAL_RESULT_FIELD_NUMBER: _ClassVar[int]
    EXPORT_RESULT_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TEXT_FIELD_NUMBER: _ClassVar[int]
    GENERATE_RESULT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    QUANTIZE_RESULT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TRAIN_METRICS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_RESULT_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    error: JobError
    eval_result: EvalResult
    export_result: ExportResult
    generate_result: GenerateResult
    generated_text: GeneratedText
    job_id: str
    log: Log
    progress: Progress
    quantize_result: QuantizeResult
    seq: int
    state: JobState
    time: _timestamp_pb2.Timestamp
    train_metrics: TrainMetrics
    train_result: TrainResult
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., train_metrics: _Optional[_Union[TrainMetrics, _Mapping]] = ..., checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., eval_result: _Optional[_Union[EvalResult, _Mapping]] = ..., quantize_result: _Optional[_Union[QuantizeResult, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., log: _Optional[_Union[Log, _Mapping]] = ..., train_result: _Optional[_Union[TrainResult, _Mapping]] = ..., generated_text: _Optional[_Union[GeneratedText, _Mapping]] = ..., generate_result: _Optional[_Union[GenerateResult, _Mapping]] = ..., export_result: _Optional[_Union[ExportResult, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ["kind", "limit", "states"]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    kind: JobKind
    limit: int
    states: _containers.RepeatedScalarFieldContainer[JobState]
    def __init__(self, kind: _Optional[_Union[JobKind, str]] = ..., states: _Optional[_Iterable[_Union[JobState, str]]] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ["jobs"]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class Log(_message.Message):
    __slots__ = ["level", "message"]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    level: LogLevel
    message: str
    def __init__(self, level: _Optional[_Union[LogLevel, str]] = ..., message: _Optional[str] = ...) -> None: ...

class LoraConfig(_message.Message):
    __slots__ = ["alpha", "dropout", "r", "target_modules", "use_rslora"]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    R_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    USE_RSLORA_FIELD_NUMBER: _ClassVar[int]
    alpha: float
    dropout: float
    r: int
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    use_rslora: bool
    def __init__(self, r: _Optional[int] = ..., alpha: _Optional[float] = ..., dropout: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ..., use_rslora: bool = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ["bytes_in", "bytes_out", "index", "message", "quantized", "tensor", "total"]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZED_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    bytes_in: int
    bytes_out: int
    index: int
    message: str
    quantized: bool
    tensor: str
    total: int
    def __init__(self, message: _Optional[str] = ..., tensor: _Optional[str] = ..., index: _Optional[int] = ..., total: _Optional[int] = ..., bytes_in: _Optional[int] = ..., bytes_out: _Optional[int] = ..., quantized: bool = ...) -> None: ...

class QuantizeRequest(_message.Message):
    __slots__ = ["blocksize", "double_quant", "model_path", "output_path", "overwrite", "quant_type", "request_id", "skip_modules"]
    BLOCKSIZE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_QUANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    QUANT_TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SKIP_MODULES_FIELD_NUMBER: _ClassVar[int]
    blocksize: int
    double_quant: bool
    model_path: str
    output_path: str
    overwrite: bool
    quant_type: QuantType
    request_id: str
    skip_modules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_path: _Optional[str] = ..., output_path: _Optional[str] = ..., quant_type: _Optional[_Union[QuantType, str]] = ..., blocksize: _Optional[int] = ..., double_quant: bool = ..., skip_modules: _Optional[_Iterable[str]] = ..., overwrite: bool = ..., request_id: _Optional[str] = ...) -> None: ...

class QuantizeResult(_message.Message):
    __slots__ = ["bits_per_parameter", "bytes_in", "bytes_out", "max_abs_error", "mean_abs_error", "output_path", "parameters_quantized", "tensors_kept", "tensors_quantized"]
    BITS_PER_PARAMETER_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_ERROR_FIELD_NUMBER: _ClassVar[int]
    MEAN_ABS_ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_QUANTIZED_FIELD_NUMBER: _ClassVar[int]
    TENSORS_KEPT_FIELD_NUMBER: _ClassVar[int]
    TENSORS_QUANTIZED_FIELD_NUMBER: _ClassVar[int]
    bits_per_parameter: float
    bytes_in: int
    bytes_out: int
    max_abs_error: float
    mean_abs_error: float
    output_path: str
    parameters_quantized: int
    tensors_kept: int
    tensors_quantized: int
    def __init__(self, parameters_quantized: _Optional[int] = ..., tensors_quantized: _Optional[int] = ..., tensors_kept: _Optional[int] = ..., bits_per_parameter: _Optional[float] = ..., bytes_in: _Optional[int] = ..., bytes_out: _Optional[int] = ..., mean_abs_error: _Optional[float] = ..., max_abs_error: _Optional[float] = ..., output_path: _Optional[str] = ...) -> None: ...

class TrainMetrics(_message.Message):
    __slots__ = ["epoch", "eta_seconds", "grad_norm", "learning_rate", "loss", "memory_bytes", "paged_bytes_in", "paged_bytes_out", "step", "tokens", "tokens_per_second", "total_steps"]
    class MemoryBytesEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PAGED_BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    PAGED_BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    epoch: float
    eta_seconds: float
    grad_norm: float
    learning_rate: float
    loss: float
    memory_bytes: _containers.ScalarMap[str, int]
    paged_bytes_in: int
    paged_bytes_out: int
    step: int
    tokens: int
    tokens_per_second: float
    total_steps: int
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., epoch: _Optional[float] = ..., loss: _Optional[float] = ..., learning_rate: _Optional[float] = ..., grad_norm: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., memory_bytes: _Optional[_Mapping[str, int]] = ..., eta_seconds: _Optional[float] = ..., paged_bytes_in: _Optional[int] = ..., paged_bytes_out: _Optional[int] = ..., tokens: _Optional[int] = ...) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ["base_model_path", "dataset_path", "eval_dataset_path", "hyperparameters", "lora", "output_path", "overwrite", "request_id", "resume_from"]
    BASE_MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    DATASET_PATH_FIELD_NUMBER: _ClassVar[int]
    EVAL_DATASET_PATH_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_FIELD_NUMBER: _ClassVar[int]
    base_model_path: str
    dataset_path: str
    eval_dataset_path: str
    hyperparameters: Hyperparameters
    lora: LoraConfig
    output_path: str
    overwrite: bool
    request_id: str
    resume_from: str
    def __init__(self, base_model_path: _Optional[str] = ..., dataset_path: _Optional[str] = ..., eval_dataset_path: _Optional[str] = ..., output_path: _Optional[str] = ..., lora: _Optional[_Union[LoraConfig, _Mapping]] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., resume_from: _Optional[str] = ..., overwrite: bool = ..., request_id: _Optional[str] = ...) -> None: ...

class TrainResult(_message.Message):
    __slots__ = ["eval_loss", "eval_perplexity", "final_loss", "first_loss", "output_path", "peak_memory_bytes", "resumed_from_step", "steps", "tokens_per_second", "train_seconds", "trainable_parameters"]
    class PeakMemoryBytesEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    EVAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    EVAL_PERPLEXITY_FIELD_NUMBER: _ClassVar[int]
    FINAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    FIRST_LOSS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    TRAINABLE_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    eval_loss: float
    eval_perplexity: float
    final_loss: float
    first_loss: float
    output_path: str
    peak_memory_bytes: _containers.ScalarMap[str, int]
    resumed_from_step: int
    steps: int
    tokens_per_second: float
    train_seconds: float
    trainable_parameters: int
    def __init__(self, output_path: _Optional[str] = ..., steps: _Optional[int] = ..., first_loss: _Optional[float] = ..., final_loss: _Optional[float] = ..., eval_loss: _Optional[float] = ..., eval_perplexity: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., train_seconds: _Optional[float] = ..., peak_memory_bytes: _Optional[_Mapping[str, int]] = ..., trainable_parameters: _Optional[int] = ..., resumed_from_step: _Optional[int] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ["from_seq", "job_id"]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    from_seq: int
    job_id: str
    def __init__(self, job_id: _Optional[str] = ..., from_seq: _Optional[int] = ...) -> None: ...

class QuantType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class LrScheduler(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class LoraDtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class JobKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class LogLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class ExportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class ExportType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
