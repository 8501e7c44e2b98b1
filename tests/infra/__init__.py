"""The template as CloudFormation sees it, the layer build and the house rules."""
