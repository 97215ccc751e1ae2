// The binding's allocation of new gradient arrays (gradient_buffer.cpp).
#ifndef FUSED_DPO_GRADIENT_BUFFER_H
#define FUSED_DPO_GRADIENT_BUFFER_H

#include <napi.h>

// gradientBuffer(bytes): a pooled ArrayBuffer, or null (make a plain one).
Napi::Value GradientBuffer(const Napi::CallbackInfo& info);

#endif
