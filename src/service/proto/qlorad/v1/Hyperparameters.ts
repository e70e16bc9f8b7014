// Original file: proto/qlorad/v1/qlorad.proto

import type { LrScheduler as _qlorad_v1_LrScheduler, LrScheduler__Output as _qlorad_v1_LrScheduler__Output } from '../../qlorad/v1/LrScheduler.ts';
import type { LoraDtype as _qlorad_v1_LoraDtype, LoraDtype__Output as _qlorad_v1_LoraDtype__Output } from '../../qlorad/v1/LoraDtype.ts';
import type { Long } from '@grpc/proto-loader';

export interface Hyperparameters {
  'learning_rate'?: (number | string);
  'lr_scheduler'?: (_qlorad_v1_LrScheduler);
  'warmup_steps'?: (number);
  'max_steps'?: (number);
  'epochs'?: (number | string);
  'micro_batch_size'?: (number);
  'gradient_accumulation_steps'?: (number);
  'max_seq_len'?: (number);
  'max_grad_norm'?: (number | string);
  'weight_decay'?: (number | string);
  'seed'?: (number);
  'gradient_checkpointing'?: (boolean);
  'save_steps'?: (number);
  'eval_steps'?: (number);
  'optimizer_gpu_budget_bytes'?: (number | string | Long);
  'packing'?: (boolean);
  'lora_dtype'?: (_qlorad_v1_LoraDtype);
  '_learning_rate'?: "learning_rate";
  '_epochs'?: "epochs";
  '_max_grad_norm'?: "max_grad_norm";
  '_seed'?: "seed";
  '_gradient_checkpointing'?: "gradient_checkpointing";
}

export interface Hyperparameters__Output {
  'learning_rate'?: (number);
  'lr_scheduler': (_qlorad_v1_LrScheduler__Output);
  'warmup_steps': (number);
  'max_steps': (number);
  'epochs'?: (number);
  'micro_batch_size': (number);
  'gradient_accumulation_steps': (number);
  'max_seq_len': (number);
  'max_grad_norm'?: (number);
  'weight_decay': (number);
  'seed'?: (number);
  'gradient_checkpointing'?: (boolean);
  'save_steps': (number);
  'eval_steps': (number);
  'optimizer_gpu_budget_bytes': (number);
  'packing': (boolean);
  'lora_dtype': (_qlorad_v1_LoraDtype__Output);
  '_learning_rate'?: "learning_rate";
  '_epochs'?: "epochs";
  '_max_grad_norm'?: "max_grad_norm";
  '_seed'?: "seed";
  '_gradient_checkpointing'?: "gradient_checkpointing";
}
