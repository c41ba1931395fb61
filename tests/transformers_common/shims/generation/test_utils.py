"""Stand-in for transformers' `tests/generation/test_utils.py`, which the PyPI sdist does not ship.

`test_modeling_common.py` imports `GenerationTesterMixin` from here and checks that the testers of generative
models derive from it. The real mixin is not available, so this one checks the core of the same contract through
`generate()`'s public options only: dict outputs of greedy and beam search, sampling with several return sequences,
static cache, generation from `inputs_embeds`, continuing from the returned cache (`cache` since transformers 5.24,
`past_key_values` before), assisted and prompt-lookup decoding. (Cache-vs-no-cache, left padding and sampling seeds
are in fourfold's `test_generation.py`.)
"""

import copy

import torch

from fourfold.modeling.compat import CACHE_NAME, output_cache

MAX_NEW_TOKENS = 4


class GenerationTesterMixin:
    def _generation_inputs(self, model_class, batch_size: int | None = None):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = model_class(config).eval()
        prompt = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        if batch_size is not None:
            prompt = {name: tensor[-batch_size:] for name, tensor in prompt.items()}
        return model, prompt

    def _greedy(self, model, prompt, **kwargs):
        return model.generate(**prompt, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, **kwargs)

    def _new_tokens(self, model, prompt, sequences):
        return sequences if model.config.is_encoder_decoder else sequences[:, prompt["input_ids"].shape[1] :]

    def test_greedy_generate_dict_outputs(self):
        for model_class in self.all_generative_model_classes:
            model, prompt = self._generation_inputs(model_class)
            model.set_attn_implementation("eager")  # sdpa computes no attention weights to return
            out = self._greedy(
                model,
                prompt,
                return_dict_in_generate=True,
                output_scores=True,
                output_logits=True,
                output_attentions=True,
                output_hidden_states=True,
            )
            self.assertTrue(torch.equal(out.sequences, self._greedy(model, prompt)))
            self.assertEqual(len(out.scores), MAX_NEW_TOKENS)
            self.assertEqual(len(out.logits), MAX_NEW_TOKENS)
            self.assertEqual(out.scores[0].shape, (prompt["input_ids"].shape[0], model.config.vocab_size))
            num_layers = model.config.get_text_config(decoder=True).num_hidden_layers
            if model.config.is_encoder_decoder:
                self.assertEqual(len(out.encoder_attentions), model.config.num_hidden_layers)
                self.assertEqual(len(out.encoder_hidden_states), model.config.num_hidden_layers + 1)
                steps = [out.decoder_attentions, out.cross_attentions, out.decoder_hidden_states]
            else:
                steps = [out.attentions, out.hidden_states]
            for per_step in steps:
                self.assertEqual(len(per_step), MAX_NEW_TOKENS)
            self.assertEqual(len(steps[0][0]), num_layers)
            self.assertEqual(len(steps[-1][0]), num_layers + 1)
            self.assertIsNotNone(output_cache(out))

    def test_beam_search_generate_dict_outputs(self):
        for model_class in self.all_generative_model_classes:
            model, prompt = self._generation_inputs(model_class)
            batch_size = prompt["input_ids"].shape[0]
            out = self._greedy(
                model, prompt, num_beams=3, num_return_sequences=2, return_dict_in_generate=True, output_scores=True
            )
            self.assertEqual(out.sequences.shape[0], batch_size * 2)
            self.assertEqual(out.sequences_scores.shape, (batch_size * 2,))
            self.assertLessEqual(len(out.scores), MAX_NEW_TOKENS)  # beams may all end early on EOS
            self.assertEqual(out.scores[0].shape, (batch_size * 3, model.config.vocab_size))

    def test_sample_generate_num_return_sequences(self):
        for model_class in self.all_generative_model_classes:
            model, prompt = self._generation_inputs(model_class)
            out = model.generate(**prompt, do_sample=True, num_return_sequences=3, max_new_tokens=MAX_NEW_TOKENS)
            self.assertEqual(out.shape[0], prompt["input_ids"].shape[0] * 3)
            self.assertTrue(((out >= 0) & (out < model.config.vocab_size)).all())

    def test_generate_with_static_cache(self):
        for model_class in self.all_generative_model_classes:
            model, prompt = self._generation_inputs(model_class)
            static = self._greedy(model, prompt, cache_implementation="static")
            self.assertTrue(torch.equal(static, self._greedy(model, prompt)))

    def test_generate_from_inputs_embeds(self):
        for model_class in self.all_generative_model_classes:
            model, prompt = self._generation_inputs(model_class)
            if model.config.is_encoder_decoder:
                continue  # the decoder starts from decoder_start_token_id either way
            embeds = model.get_input_embeddings()(prompt["input_ids"])
            from_embeds = self._greedy(model, {"inputs_embeds": embeds, "attention_mask": prompt["attention_mask"]})
            from_ids = self._greedy(model, prompt)
            self.assertTrue(torch.equal(from_embeds, self._new_tokens(model, prompt, from_ids)))

    def test_generate_continue_from_past_key_values(self):
        for model_class in self.all_generative_model_classes:
            model, prompt = self._generation_inputs(model_class)
            full = self._greedy(model, prompt)
            half = model.generate(
                **prompt, max_new_tokens=MAX_NEW_TOKENS // 2, do_sample=False, return_dict_in_generate=True
            )
            rest = {"max_new_tokens": MAX_NEW_TOKENS - MAX_NEW_TOKENS // 2, "do_sample": False}
            cache = copy.deepcopy(output_cache(half))
            if model.config.is_encoder_decoder:
                resumed = model.generate(**prompt, decoder_input_ids=half.sequences, **{CACHE_NAME: cache}, **rest)
            else:
                grown = half.sequences[:, prompt["input_ids"].shape[1] :]
                mask = torch.cat([prompt["attention_mask"], torch.ones_like(grown)], dim=1)
                resumed = model.generate(half.sequences, attention_mask=mask, **{CACHE_NAME: cache}, **rest)
            self.assertTrue(torch.equal(resumed, full))

    def test_assisted_decoding_matches_greedy_search(self):
        for model_class in self.all_generative_model_classes:
            model, prompt = self._generation_inputs(model_class, batch_size=1)  # assisted decoding takes one row
            assisted = self._greedy(model, prompt, assistant_model=copy.deepcopy(model))
            self.assertTrue(torch.equal(assisted, self._greedy(model, prompt)))

    def test_prompt_lookup_decoding_matches_greedy_search(self):
        for model_class in self.all_generative_model_classes:
            model, prompt = self._generation_inputs(model_class, batch_size=1)
            looked_up = self._greedy(model, prompt, prompt_lookup_num_tokens=2)
            self.assertTrue(torch.equal(looked_up, self._greedy(model, prompt)))
