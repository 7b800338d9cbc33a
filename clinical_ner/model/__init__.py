"""The NER model: readers, tokenization, dictionary features, training, inference, traits."""
